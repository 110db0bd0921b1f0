"""engine.params is the one definition of every operation: the engine functions take exactly its parameters with its
defaults, the CLI is built from it, and every command cancels, fails and reports progress the same way."""
from __future__ import annotations

import dataclasses
import inspect
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import rasterio
import shapely
import torch

import engine
from engine import params
from engine.analysis.synthetic import labelled_points, make_planted_raster, pixel_xy
from engine.cli.main import build_parser, cancel_on_interrupt, main
from engine.cli.options import LOADING, _function
from engine.io.vectors import write_gpkg

from .test_pipeline_raster import synthetic_s2, write_raster

# engine keywords that are deliberately not offered (library-only switches) and callbacks
NOT_OFFERED = {("convert_checkpoint", "allow_unknown"), ("export_onnx", "check"), ("embed_raster", "tags")}
CALLBACKS = {"progress", "cancel"}
OLD_NAMES = {"embed-points", "cluster", "similarity", "classify", "regress", "apply-classifier", "convert"}


def _subparsers(parser):
    return next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices


def _action(subparser, dest: str):
    return next(a for a in subparser._actions if a.dest == dest)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return engine.save_bundle(engine.GAIRModel(engine.GAIRConfig.tiny()), tmp_path_factory.mktemp("m") / "tiny")


@pytest.mark.parametrize("op", params.OPERATIONS.values(), ids=lambda op: op.id)
def test_engine_functions_take_exactly_the_defined_parameters(op):
    signature = inspect.signature(_function(op))
    offered = {p.name for p in op.params}
    for param in op.params:
        if param.name in ("backend", "device"):
            continue  # the loader's, not the function's
        forwards = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
        if param.name not in signature.parameters and forwards:
            continue  # passed on through **options (embed_rasters -> embed_raster, checked as embed_raster's)
        assert param.name in signature.parameters, f"{op.id}: {param.name} is not an engine keyword"
        default = signature.parameters[param.name].default
        if param.name == "model":
            assert param.optional and default is None  # empty: $GAIR_CHECKPOINT, the settings' or the hub's
            continue
        if default is inspect.Parameter.empty:
            assert param.positional or not param.optional, f"{op.id}: {param.name} is required by the engine"
            continue
        assert param.default == (tuple(default) if isinstance(default, list) else default), (op.id, param.name)
    for name, keyword in signature.parameters.items():
        if keyword.kind == keyword.VAR_KEYWORD:
            continue
        if name not in CALLBACKS and (op.id, name) not in NOT_OFFERED:
            assert name in offered, f"{op.id}: engine keyword {name} has no definition in engine.params"


def test_one_name_per_operation_across_engine_and_cli():
    commands = _subparsers(build_parser())
    for op in params.OPERATIONS.values():
        assert op.command in commands and _function(op).__name__ == op.id
    assert not OLD_NAMES & set(commands)
    with pytest.raises(KeyError, match="no GAIR operation"):
        params.operation("embed_points")


def test_cli_options_are_the_definitions():
    commands = _subparsers(build_parser())
    for op in [*params.OPERATIONS.values(), *params.CLI_COMMANDS.values()]:
        sub = commands[op.command]
        assert _action(sub, "quiet").default is False  # every command has --quiet
        for param in op.params:
            action = _action(sub, param.name)
            assert action.default == (None if param.repeat else param.default), (op.id, param.name)
            assert tuple(action.choices or ()) == param.choices + param.expert_choices
            assert param.help.replace("%", "%%") in action.help
            if not param.positional and param.kind != "bool":
                assert param.option in action.option_strings
        if any(p.name == "model" for p in op.params):
            for name in LOADING:  # --model, --backend, --device mean the same in every command that loads one
                assert _action(sub, name).default == params.operation("embed_raster").param(name).default
        if "seed" in inspect.signature(_function(op)).parameters:
            assert _action(sub, "seed").default == 0


@pytest.mark.parametrize(("argv", "message"), [
    (["cluster-embeddings", "r.tif", "o.tif", "--k", "1"], "argument --k: must be at least 2, got 1"),
    (["cluster-embeddings", "r.tif", "o.tif", "--k", "many"], "argument --k: 'many' is not a whole number"),
    (["embed-raster", "s2.tif", "o.tif", "--device", "gpu0"], "argument --device: 'gpu0' is not valid"),
    (["embed-raster", "s2.tif", "o.tif", "--overlap", "0.95"], "argument --overlap: must be at most 0.9"),
    (["similarity-search", "r.tif", "o.tif", "--aggregate", "median"], "argument --aggregate: invalid choice"),
    (["train-classifier", "r.tif", "l.gpkg", "--field", "c"], "the following arguments are required: --model-output"),
    (["embed-points", "s2.tif", "l.gpkg", "o.gpkg"], "argument COMMAND: invalid choice: 'embed-points'"),
])
def test_usage_errors_are_one_line_with_the_definitions_limits(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1, err


def test_a_changed_definition_changes_the_cli(monkeypatch):
    op = params.OPERATIONS["cluster_embeddings"]
    changed = tuple(p.replace(default=5) if p.name == "k" else p for p in op.params)
    monkeypatch.setitem(params.OPERATIONS, op.id, dataclasses.replace(op, params=changed))
    assert build_parser().parse_args(["cluster-embeddings", "in.tif", "out.tif"]).k == 5


def test_definitions_are_plain_data():
    import json

    text = json.dumps({op_id: op.to_dict() for op_id, op in params.OPERATIONS.items()})
    assert json.loads(text)["embed_raster"]["params"][2]["name"] == "extent"
    with pytest.raises(ValueError, match="not one of"):
        params.Param("mode", "choice", "linear", choices=("nili",))


def _cancel_cases(tmp_path: Path, bundle: Path) -> dict[str, list[str]]:
    planted = make_planted_raster(tmp_path / "planted.tif", dims=8, noise=0.5, seed=2)
    rows, cols, labels = labelled_points(planted, 8, seed=1)
    xs, ys = pixel_xy(planted, rows, cols)
    write_gpkg(tmp_path / "labels.gpkg", shapely.points(xs, ys),
               {"label": np.array(["a", "b", "c", "d"], dtype=object)[labels]}, planted.crs)
    s2 = write_raster(tmp_path / "s2.tif", synthetic_s2(96, 96, seed=3))
    out = tmp_path / "out"
    return {
        "embed-raster": ["embed-raster", str(s2), str(out / "e.tif"), "--model", str(bundle)],
        "cluster-embeddings": ["cluster-embeddings", str(planted.path), str(out / "c.tif"), "--polygons",
                               str(out / "c.gpkg")],
        "similarity-search": ["similarity-search", str(planted.path), str(out / "s.tif"), "--point",
                              str(xs[0]), str(ys[0]), "--hits", str(out / "h.gpkg")],
        "train-classifier": ["train-classifier", str(planted.path), str(tmp_path / "labels.gpkg"), "--field", "label",
                             "--model-output", str(out / "m.joblib"), "--folds", "2", "--output", str(out / "k.tif")],
    }


def test_ctrl_c_cancels_every_command_the_same_way(tmp_path, bundle, capsys, monkeypatch):
    cases = _cancel_cases(tmp_path, bundle)
    monkeypatch.setattr(sys.modules["engine.cli.main"], "cancel_on_interrupt", _always_cancelled)
    for name, argv in cases.items():
        (tmp_path / "out").mkdir()
        assert main(argv) == 130, name
        assert capsys.readouterr().err == "cancelled; no output was written\n", name
        assert os.listdir(tmp_path / "out") == [], name
        (tmp_path / "out").rmdir()


class _always_cancelled:  # noqa: N801 - stands in for the context manager
    def __init__(self, args) -> None:
        args.cancellable = True

    def __enter__(self):
        return lambda: True

    def __exit__(self, *exc) -> None:
        return None


def test_first_ctrl_c_asks_to_stop_the_second_interrupts():
    class Args:
        cancellable = True

    with cancel_on_interrupt(Args()) as cancel:
        assert not cancel()
        os.kill(os.getpid(), signal.SIGINT)
        assert cancel()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    Args.cancellable = False  # an operation that cannot poll a cancel callback is interrupted at once
    with pytest.raises(KeyboardInterrupt), cancel_on_interrupt(Args()):
        os.kill(os.getpid(), signal.SIGINT)


def test_embed_raster_extent_reads_only_that_window(tmp_path, bundle):
    from pyproj import Transformer

    data = synthetic_s2(160, 192, seed=5)
    src = write_raster(tmp_path / "s2.tif", data)  # EPSG:32633, 10 m pixels from (500000, 4500000)
    # columns 40..150, rows 30..130 of the input, given as a lon/lat box slightly inside those pixel edges
    to_lonlat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    lon0, lat0 = to_lonlat.transform(500000 + 40 * 10 + 2, 4500000 - 130 * 10 + 2)
    lon1, lat1 = to_lonlat.transform(500000 + 150 * 10 - 2, 4500000 - 30 * 10 - 2)
    code = main(["embed-raster", str(src), str(tmp_path / "part.tif"), "--extent", str(lon0), str(lat0), str(lon1),
                 str(lat1), "--extent-crs", "EPSG:4326", "--model", str(bundle), "--quiet", "--no-quicklook",
                 "--dtype", "float32"])
    assert code == 0
    with rasterio.open(tmp_path / "part.tif") as part:
        window_bounds = part.bounds
        part_values = part.read()
        assert part.count == 32  # the default 64 dims keep all of a 32-dim model: no PCA
    assert not (tmp_path / "part.pca.npz").exists()
    # the box reprojected to UTM is not axis-aligned: the window covers it with whole pixels
    assert window_bounds.left <= 500000 + 40 * 10 and window_bounds.right >= 500000 + 150 * 10
    assert window_bounds.bottom <= 4500000 - 130 * 10 and window_bounds.top >= 4500000 - 30 * 10
    assert (window_bounds.right - window_bounds.left) / 10 <= 112
    assert (window_bounds.top - window_bounds.bottom) / 10 <= 102
    # crops are anchored to the raster, not to the extent: the part is the whole raster's embedding there
    engine.embed_raster(src, tmp_path / "whole.tif", engine.load_model(bundle, device="cpu"), dtype="float32",
                        quicklook=False)
    with rasterio.open(tmp_path / "whole.tif") as whole:
        window = rasterio.windows.from_bounds(*window_bounds, transform=whole.transform).round_offsets()
        expected = whole.read(window=window.round_lengths())
    assert expected.shape == part_values.shape
    np.testing.assert_allclose(part_values, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_extent_outside_the_raster_is_one_clear_line(tmp_path, bundle, capsys):
    src = write_raster(tmp_path / "s2.tif", synthetic_s2(64, 64))
    assert main(["embed-raster", str(src), str(tmp_path / "o.tif"), "--extent", "0", "0", "1", "1",
                 "--model", str(bundle), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the extent does not overlap s2.tif") and err.count("\n") == 1
    assert not (tmp_path / "o.tif").exists()


def test_embed_photos_resolves_relative_paths_from_photo_root(tmp_path, bundle, examples, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    row = examples[0]
    (photos / "p.jpg").write_bytes(Path(row["sv_path"]).read_bytes())
    layer = tmp_path / "layers" / "points.gpkg"
    layer.parent.mkdir()
    pyogrio.raw.write(layer, shapely.to_wkb(shapely.points([row["lon"]], [row["lat"]])),
                      [np.array(["p.jpg"], dtype=object)], ["photo"], layer="points", driver="GPKG",
                      geometry_type="Point", crs="EPSG:4326")
    with pytest.warns(UserWarning, match="unreadable photo"):  # relative to the layer's folder: not there
        assert main(["embed-photos", str(layer), str(tmp_path / "a.gpkg"), "--model", str(bundle), "--quiet"]) == 0
    assert main(["embed-photos", str(layer), str(tmp_path / "b.gpkg"), "--photo-root", str(photos), "--model",
                 str(bundle), "--quiet"]) == 0
    assert "1 of 1 features embedded" in capsys.readouterr().out
    assert list(pyogrio.raw.read(tmp_path / "b.gpkg", layer="points")[3][-1]) == ["ok"]


def test_the_readme_commands_parse():
    """Every `python -m engine ...` line of the README is a valid command line today."""
    import re
    import shlex

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    lines = [m.group(1) for m in re.finditer(r"-m engine ([a-z][^\n#`]*)", readme)]
    assert len(lines) >= 12
    parser = build_parser()
    for line in lines:
        argv = shlex.split(line)
        if argv[0] in ("worker", "serve") or "--help" in argv:
            continue
        parser.parse_args(argv)  # a usage error exits (fails the test) with the reason

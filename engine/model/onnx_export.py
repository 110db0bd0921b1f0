"""Exporting a GAIR model to ONNX: three graphs with a dynamic batch axis, imnet weights and config.json.

Uses torch's TorchScript exporter (`dynamo=False`): it handles `scaled_dot_product_attention` with the RS encoder's
additive ALiBi mask without extra packages, and is still shipped (deprecated) by torch 2.13.

The location graph computes the Equal Earth projection and the Fourier phases in float64. The sigma = 256 capsule
multiplies positions by ~5000 rad, so one float32 ulp of the projection moves a phase by ~1e-3 rad: two float32
implementations (torch's and onnxruntime's sin/asin/matmul) then disagree by ~1e-4 of the embedding, and each
is that far from the exact function. In float64 the graph matches the exact function to ~1e-6.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import Cancelled, GAIRError
from ..io.files import default_mode
from ..io.guard import guarded
from ..runtime.onnx_model import CONFIG_FILE, GRAPHS, INT8_GRAPHS, ONNX_FORMAT, QUERY_FILE, OnnxGAIR, int8_file

MIN_OPSET = 17
# The export refuses to finish when a graph differs from torch by more than this (relative to the largest value):
# exporter bugs give O(1) errors; float32 reordering gives ~1e-6.
EXPORT_CHECK_TOLERANCE = 1e-3
# The int8 encoders' worst token cosine to torch on random inputs (measured ~0.9998; a broken quantization ~0.9)
INT8_CHECK_COSINE = 0.99
_ONNX_FLOAT, _ONNX_DOUBLE = 1, 11  # onnx.TensorProto element types


class _RSTokens(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.rs_encoder = model.rs_encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rs_encoder(x)


class _StreetView(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.sv_encoder, self.optical_proj = model.sv_encoder, model.optical_proj

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.sv_encoder(x)
        return pooled, self.optical_proj(pooled)


class _Float64Phases(nn.Module):
    """A FourierFeatures layer run in float64, handing float32 features to the float32 MLP after it."""

    def __init__(self, fourier: nn.Module) -> None:
        super().__init__()
        self.fourier = fourier.double()

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.fourier(v.double()).float()


def _location_graph(model: nn.Module) -> nn.Module:
    """A copy of the location encoder whose projection and Fourier phases run in float64 (see the module doc)."""
    from .encoders import FourierFeatures

    encoder = copy.deepcopy(model.location_encoder)
    for parent in list(encoder.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FourierFeatures):
                setattr(parent, name, _Float64Phases(child))
    return encoder


def _deg2rad_symbolic(g, x):
    dtype = torch.float64 if x.type().scalarType() == "Double" else torch.float32
    return g.op("Mul", x, g.op("Constant", value_t=torch.tensor(math.pi / 180, dtype=dtype)))


def _asin_symbolic(g, x):
    """onnxruntime has Asin for float32 only: in float64, refine the float32 result with two Newton steps."""
    if x.type().scalarType() != "Double":
        return g.op("Asin", x)
    theta = g.op("Cast", g.op("Asin", g.op("Cast", x, to_i=_ONNX_FLOAT)), to_i=_ONNX_DOUBLE)
    for _ in range(2):  # |x| <= sqrt(3)/2 here, so cos(theta) >= 1/2 and each step squares the error
        theta = g.op("Sub", theta, g.op("Div", g.op("Sub", g.op("Sin", theta), x), g.op("Cos", theta)))
    return theta


_SYMBOLICS = {"aten::deg2rad": _deg2rad_symbolic, "aten::asin": _asin_symbolic}


def _export_graph(module: nn.Module, example: torch.Tensor, name: str, path: Path, opset: int) -> None:
    import onnx

    _, input_name, outputs = GRAPHS[name]
    axes = {n: {0: "batch"} for n in (input_name, *outputs)}
    for op, fn in _SYMBOLICS.items():
        torch.onnx.register_custom_op_symbolic(op, fn, MIN_OPSET)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
            warnings.filterwarnings("ignore", message="The feature will be removed")
            torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=opset,
                              input_names=[input_name],
                              output_names=list(outputs), dynamic_axes=axes, do_constant_folding=True)
    finally:
        for op in _SYMBOLICS:
            torch.onnx.unregister_custom_op_symbolic(op, MIN_OPSET)
    onnx.checker.check_model(str(path))


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def _check_against_torch(folder: Path, model: nn.Module) -> None:
    """Run every graph once on random inputs (B=2) and compare with torch; an exporter bug must not go unnoticed."""
    cfg = model.config
    rng = np.random.default_rng(0)
    onnx_model = OnnxGAIR.load(folder, device="cpu")
    rs = rng.random((2, cfg.rs_channels, cfg.rs_input_size, cfg.rs_input_size), dtype=np.float32)
    sv = rng.standard_normal((2, 3, cfg.sv_input_size, cfg.sv_input_size), dtype=np.float32)
    lonlat = np.stack([rng.uniform(-180, 180, 2), rng.uniform(-80, 80, 2)], axis=1)
    location64 = copy.deepcopy(model.location_encoder).double()
    with torch.no_grad():
        pairs = {
            "rs_tokens": (onnx_model.rs_tokens(rs), model.rs_encoder(torch.from_numpy(rs)).numpy()),
            "sv": (onnx_model.encode_sv(sv, aligned=True),
                   model.optical_proj(model.sv_encoder(torch.from_numpy(sv))).numpy()),
            "location": (onnx_model.encode_location(lonlat), location64(torch.from_numpy(lonlat)).numpy()),
        }
    for name, (got, want) in pairs.items():
        err = _relative_error(got, want)
        if not err <= EXPORT_CHECK_TOLERANCE:
            raise GAIRError(f"the exported {name} graph differs from torch by {err:.2e} (relative); "
                            "the export is wrong, "
                            f"please report it with your torch {torch.__version__} and onnx versions")


# Attention projections stay float32: quantising them too moves the pixels' embeddings, less their mean, to a cosine
# of 0.974 with float32 (worst 0.917; official-size model, random weights, the real samples); kept, 0.993 (worst
# 0.981), for 1.4x float32's speed instead of 1.9x. Queries, keys and values feed the softmax, whose weights amplify
# their rounding. Module names of the RS encoder (to_qkv, to_out) and of the street-view ViT (query, key, value, and
# its attention output `dense`; its MLP is dense_1, dense_2).
FLOAT_PROJECTIONS = ("to_qkv", "to_out", "query", "key", "value", "dense")


def quantize_int8(folder: Path) -> dict[str, str]:
    """Write `<graph>.int8.onnx` beside each encoder of INT8_GRAPHS: onnxruntime dynamic quantization, weights int8
    once, activations per call, of the MLP MatMul/Gemm layers (two thirds of the transformer's FLOPs).

    reduce_range (7-bit weights) keeps the u8 x s8 products of CPUs without VNNI from saturating their 16-bit sums:
    with full-range weights the tokens' cosine to float32 drops from ~0.9999 to ~0.99 (measured, official widths).
    Per-channel weight scales; the first MatMul (the RS encoder's input projection, ~1% of the FLOPs) and the
    attention projections (FLOAT_PROJECTIONS) stay float32.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    files = {}
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # quantize_dynamic advises a pre-processing step on the root logger
    try:
        for graph in INT8_GRAPHS:
            source, target = folder / GRAPHS[graph][0], folder / int8_file(graph)
            matmuls = [n.name for n in onnx.load(str(source)).graph.node if n.op_type in ("MatMul", "Gemm")]
            kept = [name for name in matmuls if set(name.split("/")) & set(FLOAT_PROJECTIONS)] + matmuls[:1]
            quantize_dynamic(source, target, weight_type=QuantType.QInt8, reduce_range=True, per_channel=True,
                             op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=sorted(set(kept)))
            files[graph] = target.name
    finally:
        logging.disable(previous)
    return files


def _check_int8(folder: Path, model: nn.Module) -> None:
    """The int8 encoders must stay close to torch (cosine per token); a broken quantization must not be kept."""
    cfg = model.config
    x = np.random.default_rng(0).random((2, cfg.rs_channels, cfg.rs_input_size, cfg.rs_input_size), dtype=np.float32)
    got = OnnxGAIR.load(folder, device="cpu", int8=True).rs_tokens(x)
    with torch.no_grad():
        want = model.rs_encoder(torch.from_numpy(x)).numpy()
    cosine = float(((got * want).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(want, axis=-1))).min())
    if not cosine >= INT8_CHECK_COSINE:
        raise GAIRError(f"the int8 rs_tokens graph is too far from torch (worst token cosine {cosine:.4f}); export "
                        f"without --int8, and please report it with your onnxruntime version")


def _is_export(folder: Path) -> bool:
    try:
        return json.loads((folder / CONFIG_FILE).read_text()).get("format") == ONNX_FORMAT
    except (OSError, ValueError):
        return False


def _check_destination(out: Path) -> None:
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or _is_export(out))):
        raise GAIRError(f"{out} exists and is neither empty nor an earlier ONNX export; "
                        "choose a new folder or remove it")


def _move_into_place(tmp: Path, out: Path) -> None:
    """Replace `out` (absent, empty or an earlier export) by the finished `tmp` folder."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old / out.name)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


@guarded
def export_onnx(model_or_bundle_path, out_dir: str | os.PathLike, opset: int = MIN_OPSET, int8: bool = False,
                progress: Callable[[float], None] | None = None, cancel: Callable[[], bool] | None = None,
                check: bool = True) -> Path:
    """GAIRModel, bundle folder or official checkpoint -> ONNX export folder for `load_model(out_dir)`.

    Writes rs_tokens.onnx, sv.onnx, location.onnx, query.npz (imnet) and config.json (GAIRConfig + the torch
    model's fingerprint) into a temporary folder beside `out_dir`, checks them, then moves it into place.
    int8: also rs_tokens.int8.onnx and sv.int8.onnx (quantize_int8), loaded with backend "onnx-int8".
    """
    if opset < MIN_OPSET:
        raise GAIRError(f"opset {opset} is too old: the export needs opset >= {MIN_OPSET} (use the default)")
    out = Path(out_dir)
    _check_destination(out)
    if isinstance(model_or_bundle_path, nn.Module):
        model, source = model_or_bundle_path, ""
    else:
        from ..runtime.loading import load_model

        model, source = load_model(model_or_bundle_path, device="cpu", backend="torch"), str(model_or_bundle_path)
    fingerprint, cfg = model.fingerprint, model.config
    if model.dtype != torch.float32 or model.device.type != "cpu":
        model = copy.deepcopy(model).to("cpu", torch.float32)
    model = model.eval()
    notify = progress or (lambda fraction: None)

    def step(fraction: float) -> None:
        if cancel is not None and cancel():
            raise Cancelled("ONNX export cancelled; nothing was written")
        notify(fraction)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    os.chmod(tmp, default_mode(folder=True))  # mkdtemp makes it private (0700); the export is shared like any folder
    try:
        step(0.0)
        jobs = [
            ("rs_tokens", _RSTokens(model), torch.zeros(2, cfg.rs_channels, cfg.rs_input_size, cfg.rs_input_size),
             0.45),
            ("sv", _StreetView(model), torch.zeros(2, 3, cfg.sv_input_size, cfg.sv_input_size), 0.85),
            ("location", _location_graph(model), torch.tensor([[0.0, 0.0], [10.0, 45.0]], dtype=torch.float64), 0.9),
        ]
        for name, module, example, done in jobs:
            _export_graph(module, example, name, tmp / GRAPHS[name][0], opset)
            step(done)
        np.savez(tmp / QUERY_FILE, imnet_weight=model.imnet.weight.detach().numpy(),
                 imnet_bias=model.imnet.bias.detach().numpy())
        meta = {"format": ONNX_FORMAT, "version": 1, "fingerprint": fingerprint, "source": source, "opset": opset,
                "torch": torch.__version__, "graphs": {name: spec[0] for name, spec in GRAPHS.items()},
                "config": cfg.to_dict()}
        if int8:
            meta["int8_graphs"] = quantize_int8(tmp)
            step(0.95)
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        if check:
            _check_against_torch(tmp, model)
            if int8:
                _check_int8(tmp, model)
        step(1.0)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out

"""Fetch GeoCLIP's published location-encoder weights (MIT) for `init.geoclip`, without installing geoclip.

    python scripts/fetch_geoclip_weights.py [--out .cache/geoclip] [--wheel geoclip-1.3.0-py3-none-any.whl]

Runs `pip download --no-deps geoclip==1.3.0`, extracts `geoclip/model/weights/location_encoder_weights.pth` and
the licence, then checks the mapping: our capsules, fed [lon, lat], must reproduce GeoCLIP's capsules fed
[lat, lon] — GeoCLIP's own projection and Fourier code are read from the wheel's source and run on the same
weights. Writes <out>/location_encoder_weights.pth and <out>/LICENSE; prints the config line to use.
"""
from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.io.files import atomic_path  # noqa: E402  (needs ROOT on sys.path when run as a script)

VERSION = "1.3.0"
WEIGHTS = "geoclip/model/weights/location_encoder_weights.pth"
SOURCES = ("geoclip/model/location_encoder.py", "geoclip/model/rff/functional.py")


def download_wheel(folder: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", f"geoclip=={VERSION}", "-d", str(folder)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(folder.glob(f"geoclip-{VERSION}-*.whl"))
    if done.returncode or not wheels:
        raise SystemExit(f"pip download failed ({done.returncode}): {done.stderr.strip()[-800:]}\n"
                         "Without network access, download the wheel elsewhere and pass --wheel.")
    return wheels[0]


def extract(wheel: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        if WEIGHTS not in names:
            raise SystemExit(f"{wheel} has no {WEIGHTS}; is it the geoclip {VERSION} wheel?")
        licence = next((n for n in names if n.endswith("LICENSE")), None)
        for name, target in ((WEIGHTS, out / "location_encoder_weights.pth"), (licence, out / "LICENSE")):
            if name is None:
                continue
            with atomic_path(target) as tmp:
                tmp.write_bytes(zf.read(name))
    return out / "location_encoder_weights.pth"


def geoclip_functions(wheel: Path) -> dict:
    """GeoCLIP's `equal_earth_projection` and `gaussian_encoding` (plus constants), executed from the wheel's source
    without importing the package (which needs pandas and transformers)."""
    import numpy as np
    import torch

    namespace: dict = {"torch": torch, "np": np, "Tensor": torch.Tensor}
    with zipfile.ZipFile(wheel) as zf:
        for source in SOURCES:
            tree = ast.parse(zf.read(source).decode("utf-8"))
            wanted = ("equal_earth_projection", "gaussian_encoding")
            keep = [node for node in tree.body if isinstance(node, ast.Assign) or
                    (isinstance(node, ast.FunctionDef) and node.name in wanted)]
            for node in keep:
                if isinstance(node, ast.FunctionDef):
                    node.decorator_list = []  # run eagerly rather than through torch.jit.script
            exec(compile(ast.Module(body=keep, type_ignores=[]), source, "exec"), namespace)  # noqa: S102
    return namespace


def check_mapping(weights: Path, wheel: Path) -> float:
    """Max abs difference between our capsules on [lon, lat] and GeoCLIP's on [lat, lon], same weights."""
    import torch

    from engine.config import GAIRConfig
    from engine.model.checkpoint import load_torch_file
    from engine.model.encoders import LocationEncoder, equal_earth
    from engine.pretrain.weights import load_geoclip

    state = load_torch_file(weights, "GeoCLIP weights")
    encoder = LocationEncoder(GAIRConfig())
    for note in load_geoclip(encoder, state):
        print(note)
    fn = geoclip_functions(wheel)
    g = torch.Generator().manual_seed(0)
    lonlat = torch.stack([torch.rand(256, generator=g) * 360 - 180, torch.rand(256, generator=g) * 170 - 85], dim=1)
    worst = 0.0
    with torch.no_grad():
        theirs_xy = fn["equal_earth_projection"](lonlat.flip(1))  # GeoCLIP reads [lat, lon]
        ours_xy = equal_earth(lonlat)
        for i in range(len(list(encoder.children()))):
            capsule = getattr(encoder, f"LocEnc{i}").capsule
            ours = capsule(ours_xy)
            h = fn["gaussian_encoding"](theirs_xy, state[f"LocEnc{i}.capsule.0.b"])
            for j in (1, 3, 5):
                h = torch.relu(h @ state[f"LocEnc{i}.capsule.{j}.weight"].T + state[f"LocEnc{i}.capsule.{j}.bias"])
            worst = max(worst, float((ours - h).abs().max() / h.abs().max()))
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / ".cache" / "geoclip"), help="folder for the weights and licence")
    parser.add_argument("--wheel", help="a geoclip wheel already downloaded (skips pip download)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = Path(args.wheel) if args.wheel else download_wheel(Path(tmp))
        weights = extract(wheel, Path(args.out))
        error = check_mapping(weights, wheel)
    print(f"capsule outputs vs GeoCLIP's own code: max relative difference {error:.2e}")
    if error > 1e-5:
        print("mapping check FAILED: the capsules do not reproduce GeoCLIP", file=sys.stderr)
        return 1
    print(f"wrote {weights} (GeoCLIP {VERSION}, MIT licence in {weights.parent / 'LICENSE'})")
    print(f'use it with:  --set init.geoclip="{weights}"   (the base model; heads start fresh)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

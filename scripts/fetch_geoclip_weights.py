"""Fetch GeoCLIP's published location-encoder weights (MIT) for `init.geoclip`, without installing geoclip.

    python scripts/fetch_geoclip_weights.py [--out .cache/geoclip] [--wheel geoclip-1.3.0-py3-none-any.whl]

Runs `pip download --no-deps --only-binary=:all: geoclip==1.3.0` (a wheel: nothing is built or run), checks the
wheel's pinned sha256, reads only `geoclip/model/weights/location_encoder_weights.pth` (pinned sha256 too) and the
licence out of it — no code of the wheel is imported or executed — and loads the weights as tensors only
(`torch.load(weights_only=True)`). The mapping check feeds four fixed places to our capsules ([lon, lat]) and
compares with the values GeoCLIP's own code gives on the same weights ([lat, lon]), recorded once below.
Writes <out>/location_encoder_weights.pth and <out>/LICENSE; prints the config line to use.
"""
from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.io.files import atomic_path  # noqa: E402 - after the sys.path line above

VERSION = "1.3.0"
WHEEL = f"geoclip-{VERSION}-py3-none-any.whl"
WEIGHTS = "geoclip/model/weights/location_encoder_weights.pth"
LICENCE = f"geoclip-{VERSION}.dist-info/licenses/LICENSE"
# sha256 of the wheel the package index serves and of the weights file inside it (recorded when this was written)
WHEEL_SHA256 = "08a93791166a279d52b95c466a952c75f17f654cc61bdf6ab20355325b564dec"
WEIGHTS_SHA256 = "94b80ae3af89fca78539e129dd2929d321247f5ceeeb0a31bc2c31041a253394"
# GeoCLIP's capsules (its equal_earth_projection + gaussian_encoding + MLP, fed [lat, lon]) at these [lon, lat]
# places: the sum of each capsule's 1024 outputs, per scale
PLACES = ((8.55, 47.37), (-122.42, 37.77), (151.21, -33.87), (0.0, 0.0))
GEOCLIP_SUMS = ((2.771517, 2.774982, 3.432048, 8.460666), (5.006975, 2.728343, 4.071983, 12.622072),
                (8.342717, 9.555246, 9.161895, 6.820266))


def sha256_of(data: bytes | Path) -> str:
    digest = hashlib.sha256()
    if isinstance(data, Path):
        with data.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    else:
        digest.update(data)
    return digest.hexdigest()


def check_sha256(what: str, data: bytes | Path, expected: str) -> None:
    """Refuse anything whose sha256 is not the pinned one (a tampered or different download)."""
    found = sha256_of(data)
    if found != expected:
        raise SystemExit(f"{what} has sha256 {found}, expected {expected}: not the geoclip {VERSION} release this "
                         "script was checked against; nothing was written")


def download_wheel(folder: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", f"geoclip=={VERSION}",
           "-d", str(folder)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheel = folder / WHEEL
    if done.returncode or not wheel.is_file():
        raise SystemExit(f"pip download failed ({done.returncode}): {done.stderr.strip()[-800:]}\n"
                         "Without network access, download the wheel elsewhere and pass --wheel.")
    return wheel


def extract(wheel: Path, out: Path) -> Path:
    """The weights (and licence) out of a wheel whose sha256 is the pinned one; only those two files are read."""
    check_sha256(wheel.name, wheel, WHEEL_SHA256)
    with zipfile.ZipFile(wheel) as zf:
        if WEIGHTS not in zf.namelist():
            raise SystemExit(f"{wheel} has no {WEIGHTS}; is it the geoclip {VERSION} wheel?")
        weights = zf.read(WEIGHTS)
        licence = zf.read(LICENCE) if LICENCE in zf.namelist() else None
    check_sha256(WEIGHTS, weights, WEIGHTS_SHA256)
    out.mkdir(parents=True, exist_ok=True)
    for data, target in ((weights, out / "location_encoder_weights.pth"), (licence, out / "LICENSE")):
        if data is not None:
            with atomic_path(target) as tmp:
                tmp.write_bytes(data)
    return out / "location_encoder_weights.pth"


def check_mapping(weights: Path) -> float:
    """Max relative difference between our capsules' output sums on PLACES and GeoCLIP's recorded ones."""
    import torch

    from engine.config import GAIRConfig
    from engine.model.checkpoint import load_torch_file
    from engine.model.encoders import LocationEncoder, equal_earth
    from engine.pretrain.weights import load_geoclip

    state = load_torch_file(weights, "GeoCLIP weights")
    encoder = LocationEncoder(GAIRConfig())
    for note in load_geoclip(encoder, state):
        print(note)
    with torch.no_grad():
        xy = equal_earth(torch.tensor(PLACES))
        ours = torch.stack([getattr(encoder, f"LocEnc{i}").capsule(xy).sum(1) for i in range(len(GEOCLIP_SUMS))])
    theirs = torch.tensor(GEOCLIP_SUMS)
    return float(((ours - theirs).abs() / theirs.abs()).max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / ".cache" / "geoclip"), help="folder for the weights and licence")
    parser.add_argument("--wheel", help="a geoclip wheel already downloaded (skips pip download)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = Path(args.wheel) if args.wheel else download_wheel(Path(tmp))
        weights = extract(wheel, Path(args.out))
    error = check_mapping(weights)
    print(f"capsule outputs vs GeoCLIP's own (recorded): max relative difference {error:.2e}")
    if error > 1e-4:
        print("mapping check FAILED: the capsules do not reproduce GeoCLIP", file=sys.stderr)
        return 1
    print(f"wrote {weights} (GeoCLIP {VERSION}, MIT licence in {weights.parent / 'LICENSE'})")
    print(f'use it with:  --set init.geoclip="{weights}"   (the base model; heads start fresh)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

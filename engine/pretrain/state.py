"""Training checkpoints (atomic, resumable bit-for-bit), RNG state capture, and the CSV/TensorBoard run log."""
from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import torch

from ..errors import GAIRError
from ..io.files import atomic_path
from ..model.checkpoint import load_torch_file

CHECKPOINT_FORMAT = "gair-pretrain-checkpoint"


def rng_state() -> dict:
    """Python, numpy, torch (and CUDA) generator states, as tensors and tuples torch.load(weights_only) accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def save_checkpoint(payload: dict, out_dir: str | Path, step: int, keep: int) -> Path:
    """Write checkpoints/step_XXXXXXXX.pt via a temp file + os.replace; keep the newest `keep`."""
    folder = checkpoint_dir(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"step_{step:08d}.pt"
    with atomic_path(target) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, "step": step, **payload}, tmp)
    for old in sorted(folder.glob("step_*.pt"))[:-max(keep, 1)]:
        old.unlink(missing_ok=True)
    return target


def find_checkpoint(resume: str | bool, out_dir: str | Path) -> Path | None:
    """`True`/"latest" -> the newest checkpoint of out_dir (None when there is none yet); a path -> that file."""
    if not resume:
        return None
    if resume is True or resume == "latest":
        found = sorted(checkpoint_dir(out_dir).glob("step_*.pt"))
        return found[-1] if found else None
    path = Path(resume)
    if not path.is_file():
        raise GAIRError(f"checkpoint {path} not found; --resume takes a checkpoint file or nothing (the newest in "
                        f"{out_dir})")
    return path


def load_checkpoint(path: Path) -> dict:
    payload = load_torch_file(path, "training checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise GAIRError(f"{path} is not a pretraining checkpoint; to start from model weights use init.source")
    return payload


class RunLog:
    """log.csv (one row per logged step, cut back to the resumed step) and TensorBoard when it is installed."""

    def __init__(self, out_dir: Path, columns: list[str], resume_step: int | None, tensorboard: bool) -> None:
        self.path = out_dir / "log.csv"
        self.columns = columns
        kept: list[dict] = []
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="", encoding="utf-8") as fh:
                kept = [row for row in csv.DictReader(fh) if int(row["step"]) <= resume_step]
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(kept)
        self._fh = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115 - open for the run, closed by close()
        self._writer = csv.DictWriter(self._fh, fieldnames=columns, extrasaction="ignore")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tensorboard"))
            except ImportError:
                self.tb = None

    def write(self, row: dict) -> None:
        self._writer.writerow({k: (f"{v:.9g}" if isinstance(v, float) else v) for k, v in row.items()})
        self._fh.flush()
        if self.tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, float):
                    self.tb.add_scalar(key, value, row["step"])

    def close(self) -> None:
        self._fh.close()
        if self.tb is not None:
            self.tb.close()


def read_log(path: str | Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))

"""Training checkpoints (atomic, resumable bit-for-bit), RNG state capture, and the CSV/TensorBoard run log."""
from __future__ import annotations

import csv
import hashlib
import json
import random
import warnings
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


# ---- the run's identity ------------------------------------------------------------------------------------------
# Options that do not define the run: where its files are, how it logs, how its work is spread. Everything else
# (model, start, data augmentation, objective, optimiser, schedule, seed, batch) is the run's identity.
NOT_IDENTITY = {
    "data": {"manifest", "num_workers"},
    "init": {"source", "croma", "geoclip", "teacher", "sv_teacher", "rs_teacher"},
    "eval": {"patches", "raster", "points", "location", "class_field", "split", "block_size_m", "folds", "output"},
    "train": {"out_dir", "device", "threads", "checkpoint_every", "keep_checkpoints", "log_every", "tensorboard",
              "progress", "compile"},
}


def run_config(config: dict) -> dict:
    """The part of a PretrainConfig.to_dict() that defines the run (JSON-ready, sorted)."""
    plain = json.loads(json.dumps(config, default=str, sort_keys=True))
    return {section: {k: v for k, v in values.items() if k not in NOT_IDENTITY.get(section, ())}
            if isinstance(values, dict) else values for section, values in plain.items()}


def run_id(config: dict) -> str:
    """A short hash of run_config(config): the same for every checkpoint of one run."""
    return hashlib.sha256(json.dumps(run_config(config), sort_keys=True).encode()).hexdigest()[:16]


def config_differences(theirs: dict, ours: dict, limit: int = 4) -> list[str]:
    """`section.key: A there, B here` for the identity options that differ (first `limit`)."""
    a, b = run_config(theirs), run_config(ours)
    found = []
    for section in sorted(set(a) | set(b)):
        sa, sb = a.get(section, {}), b.get(section, {})
        if not isinstance(sa, dict) or not isinstance(sb, dict):
            if sa != sb:
                found.append(f"{section}: {sa!r} there, {sb!r} here")
            continue
        found += [f"{section}.{key}: {sa.get(key)!r} there, {sb.get(key)!r} here"
                  for key in sorted(set(sa) | set(sb)) if sa.get(key) != sb.get(key)]
    return found[:limit] + ([f"and {len(found) - limit} more"] if len(found) > limit else [])


def check_fresh_folder(out_dir: str | Path, overwrite: bool) -> None:
    """A fresh run may not start in a folder holding anything (an older run's checkpoints would mix with its own);
    with overwrite, that older run's checkpoints are removed first (the rest is replaced as the run writes it)."""
    out = Path(out_dir)
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        held = sorted(p.name for p in out.iterdir())
        raise GAIRError(f"the output folder {out} is not empty ({', '.join(held[:4])}{', ...' if len(held) > 4 else ''}"
                        f"); continue its run with --resume, choose an empty folder, or add --overwrite to start "
                        f"over (its checkpoints are deleted)")
    for old in checkpoint_dir(out).glob("step_*.pt*"):
        old.unlink(missing_ok=True)


# ---- checkpoints: atomic, checksummed, tagged with the run -------------------------------------------------------
def _sidecar(path: Path) -> Path:
    """step_XXXXXXXX.pt.json beside a checkpoint: its sha256, step and run identity."""
    return path.with_name(path.name + ".json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(payload: dict, out_dir: str | Path, step: int, keep: int) -> Path:
    """Write checkpoints/step_XXXXXXXX.pt via a temp file + os.replace, its sidecar (sha256, step, run id) first;
    keep the newest `keep` of this run (payload["config"] names it)."""
    folder = checkpoint_dir(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"step_{step:08d}.pt"
    run = run_id(payload["config"]) if "config" in payload else ""
    with atomic_path(target) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, "step": step, "run_id": run, **payload}, tmp)
        with atomic_path(_sidecar(target)) as side:  # before the checkpoint: a checkpoint always has its checksum
            side.write_text(json.dumps({"sha256": _sha256(tmp), "step": step, "run_id": run}))
    ours = [p for p in sorted(folder.glob("step_*.pt")) if _read_sidecar(p).get("run_id", run) == run]
    for old in ours[:-max(keep, 1)]:
        old.unlink(missing_ok=True)
        _sidecar(old).unlink(missing_ok=True)
    return target


def _read_sidecar(path: Path) -> dict:
    try:
        found = json.loads(_sidecar(path).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def checkpoint_problem(path: Path) -> str | None:
    """Why a checkpoint file cannot be trusted (empty, checksum differs), or None when it is intact."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if size == 0:
        return "is empty (0 bytes: the run was stopped while writing it, or the disk was full)"
    expected = _read_sidecar(path).get("sha256")
    if expected is None:
        return None if not _sidecar(path).exists() else f"has an unreadable checksum file {_sidecar(path).name}"
    if _sha256(path) != expected:
        return (f"is damaged: its sha256 differs from the one written with it in {_sidecar(path).name} "
                "(cut short or changed since)")
    return None


def find_checkpoint(resume: str | bool, out_dir: str | Path) -> Path | None:
    """`True`/"latest" -> the newest intact checkpoint of out_dir (None when there is none yet; damaged newer ones
    are skipped with a warning); a path -> that file, which must be intact."""
    if not resume:
        return None
    if resume is True or resume == "latest":
        found = sorted(checkpoint_dir(out_dir).glob("step_*.pt"), reverse=True)
        skipped = []
        for path in found:
            problem = checkpoint_problem(path)
            if problem is None:
                if skipped:
                    warnings.warn(f"{'; '.join(skipped)}: resuming from the newest intact checkpoint, {path.name}",
                                  stacklevel=2)
                return path
            skipped.append(f"checkpoint {path.name} {problem}")
        if skipped:
            raise GAIRError(f"no intact checkpoint in {checkpoint_dir(out_dir)} to resume from ({'; '.join(skipped)});"
                            f" start over with --overwrite")
        return None
    path = Path(resume)
    if not path.is_file():
        raise GAIRError(f"checkpoint {path} not found; --resume takes a checkpoint file or nothing (the newest in "
                        f"{out_dir})")
    problem = checkpoint_problem(path)
    if problem is not None:
        raise GAIRError(f"checkpoint {path} {problem}; resume from another one (--resume alone picks the newest "
                        f"intact one)")
    return path


def load_checkpoint(path: Path, config: dict | None = None) -> dict:
    """A pretraining checkpoint; with `config` (this run's PretrainConfig.to_dict()), it must be of this run."""
    payload = load_torch_file(path, "training checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise GAIRError(f"{path} is not a pretraining checkpoint; to start from model weights use init.source")
    if config is not None and "config" in payload and run_id(payload["config"]) != run_id(config):
        raise GAIRError(f"{path} belongs to another run ({'; '.join(config_differences(payload['config'], config))}"
                        f"); resume it with its own config, or start over in this folder with --overwrite")
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

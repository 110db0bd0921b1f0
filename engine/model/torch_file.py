"""The one way the engine reads a PyTorch file (checkpoints, pretraining state, CROMA and GeoCLIP weights).

torch.load on CPU with weights_only: tensors, containers and argparse.Namespace (which MAE-style checkpoints store as
`args`), never arbitrary pickled code. A missing or unreadable file is a GAIRError naming the file.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import GAIRError


def load_torch_file(path: str | os.PathLike, what: str = "checkpoint", hint: str = "") -> object:
    """The file's content; `what` names it in errors ("training checkpoint", "CROMA weights"), `hint` ends them."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise GAIRError(f"{what} {path} not found")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - report any unpickling failure with the file name
        raise GAIRError(f"could not read {what} {path}: {exc}{hint}") from exc

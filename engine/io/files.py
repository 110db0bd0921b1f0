"""Atomic file output: write to a temp file beside the target, then os.replace, so no half-written file is left."""
from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path in target's folder; it replaces target (mode 644) when the block succeeds, else is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=target.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def temp_path_for(path: str | os.PathLike, suffix: str | None = None) -> Path:
    """A hidden temp name in the destination folder, so os.replace is atomic (same filesystem)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp-{uuid.uuid4().hex[:8]}{suffix or path.suffix}")

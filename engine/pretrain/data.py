"""Pretraining Dataset, resumable distributed sampler and DataLoader.

Every random choice of a sample (augmentations) comes from a Generator seeded by (seed, epoch, index), so batches
are identical whatever the number of workers and after a resume: the sampler yields (epoch, index) keys and skips
the batches a checkpoint had already consumed.
"""
from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..config import GAIRConfig
from ..errors import GAIRError
from ..pipeline.source import SourceRaster
from ..runtime.preprocess import load_photo, preprocess_rs, preprocess_sv
from .augment import dihedral, random_resized_crop, rs_colour_jitter, sv_colour_jitter
from .config import DataSection
from .manifest import Sample


class _RasterCache:
    """Open SourceRasters (the inference pipeline's reader), per process: handles do not survive a fork."""

    def __init__(self, config: GAIRConfig, bands=None) -> None:
        self.config, self.bands = config, bands
        self.pid = -1
        self.handles: dict[str, SourceRaster] = {}

    def read(self, path: str, window: tuple[int, int, int, int] | None) -> np.ndarray:
        """(10, h, w) raw values in the model's band order, nodata as 0, exactly as inference reads a crop."""
        from rasterio.windows import Window

        if self.pid != os.getpid():
            self.pid, self.handles = os.getpid(), {}
        source = self.handles.get(path)
        if source is None:
            if len(self.handles) > 64:
                for old in self.handles.values():
                    old.close()
                self.handles = {}
            source = self.handles[path] = SourceRaster(path, self.config, self.bands)
        return source.read(Window(*window) if window else Window(0, 0, source.width, source.height))[0]


class PretrainDataset(Dataset):
    """Samples -> dict(rs (10,S,S), sv (3,Ssv,Ssv), rel_xy (2,) float64, lonlat (2,), index).

    `train=False` turns augmentations off; `photos=False` leaves `sv` out (probe and label points).
    """

    def __init__(self, samples: list[Sample], model_config: GAIRConfig, data: DataSection | None = None,
                 train: bool = True, seed: int = 0, photos: bool = True) -> None:
        if not samples:
            raise GAIRError("the dataset has no samples")
        self.samples = samples
        self.cfg = model_config
        self.data = data or DataSection()
        self.train = train
        self.seed = seed
        self.photos = photos
        self._rasters = _RasterCache(model_config, self.data.bands or None)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key) -> dict:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        sample = self.samples[index]
        rng = np.random.default_rng([self.seed, epoch, index])
        rs, rel = self.load_crop(sample, rng)
        item = {"rs": torch.from_numpy(rs), "rel_xy": torch.from_numpy(rel),
                "lonlat": torch.tensor([sample.lon, sample.lat], dtype=torch.float32), "index": index}
        if self.photos:
            item["sv"] = torch.from_numpy(self.load_photo(sample, rng))
        return item

    def load_crop(self, sample: Sample, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        raw = self._rasters.read(sample.rs_path, sample.window)
        try:
            crop = preprocess_rs(raw, self.cfg)[0]
        except GAIRError as exc:
            raise GAIRError(f"{sample.rs_path}: {exc}") from exc
        rel = np.array([sample.query_x, sample.query_y], dtype=np.float64)
        if not self.train:
            return crop, rel
        d = self.data
        if d.rs_flip_rotate:
            crop, rel = dihedral(crop, rel, int(rng.integers(4)), bool(rng.integers(2)))
        if rng.uniform() < d.rs_jitter_p:
            crop = rs_colour_jitter(crop, rng, d.rs_brightness, d.rs_contrast)
        return crop, rel

    def load_photo(self, sample: Sample, rng: np.random.Generator) -> np.ndarray:
        try:
            img = load_photo(sample.sv_path)
        except OSError as exc:
            raise GAIRError(f"cannot read photo {sample.sv_path}: {exc}") from exc
        if self.train:
            d = self.data
            img = random_resized_crop(img, rng, d.sv_crop_scale)
            if rng.uniform() < d.sv_hflip_p:
                img = img[:, ::-1]
            if rng.uniform() < d.sv_jitter_p:
                img = sv_colour_jitter(img, rng, d.sv_jitter)
        return preprocess_sv(np.ascontiguousarray(img), self.cfg)[0]


class EpochSampler(Sampler):
    """This rank's share of a DistributedSampler epoch as (epoch, index) keys, optionally skipping a prefix."""

    def __init__(self, size: int, num_replicas: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True) -> None:
        self.inner = DistributedSampler(range(size), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip
        self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for position, index in enumerate(self.inner):
            if position >= self.skip:
                yield self.epoch, index

    def __len__(self) -> int:
        return len(self.inner) - self.skip


def make_loader(dataset: PretrainDataset, sampler: EpochSampler, batch_size: int, num_workers: int,
                pin_memory: bool = False) -> DataLoader:
    if len(sampler.inner) < batch_size:
        raise GAIRError(f"{len(sampler.inner)} samples per process cannot fill one batch of {batch_size}; "
                        "lower train.batch_size or add samples")
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=True,
                      pin_memory=pin_memory, persistent_workers=num_workers > 0)

"""Embedding-space identity: everything that changes the vectors, recorded with every raster, layer and model file.

Two embeddings can be compared (similarity, a classifier applied to a raster) only when they were made the same way:
same weights (fingerprint), same query mode (nili/bilinear/bicubic/transformer), same NILI convention, same PCA
projection and same values of any further option that changes the vectors (`options`, the hook for new model
options). The identity is kept readable in the tags (one tag per part) and hashed to a short id (`GAIR_SPACE`).

Street-view photos and locations are embedded without a raster query, so their `mode` and `convention` are empty:
"not applicable", and they compare with a raster of any query mode (GAIR puts all modalities in one space).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import GAIRError

TAG_MODEL, TAG_SPACE, TAG_QUERY_MODE = "GAIR_MODEL", "GAIR_SPACE", "GAIR_QUERY_MODE"
TAG_CONVENTION, TAG_PCA_SHA, TAG_OPTIONS = "GAIR_NILI_CONVENTION", "GAIR_PCA_SHA", "GAIR_SPACE_OPTIONS"
SPACE_TAGS = (TAG_MODEL, TAG_SPACE, TAG_QUERY_MODE, TAG_CONVENTION, TAG_PCA_SHA, TAG_OPTIONS)
_LABELS = {"model": "model", "mode": "query mode", "convention": "NILI convention", "pca": "PCA projection"}


@dataclass(frozen=True)
class EmbeddingSpace:
    """Which vectors: model fingerprint, query mode and NILI convention ("" when not a raster query), PCA projection
    hash ("" = the model's full space) and further options (name -> value)."""

    model: str
    mode: str = ""
    convention: str = ""
    pca: str = ""
    options: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of_model(cls, model, mode: str = "", pca: str = "", **options: str) -> EmbeddingSpace:
        """The space a loaded model's vectors live in for a query mode ("" for photos and locations)."""
        return cls(model.fingerprint, mode, model.config.nili_convention if mode else "", pca,
                   {**model_options(model.config), **{k: str(v) for k, v in options.items()}})

    def identity(self) -> dict[str, str]:
        return {"model": self.model, "mode": self.mode, "convention": self.convention, "pca": self.pca,
                **{f"option:{k}": str(v) for k, v in sorted(self.options.items())}}

    @property
    def id(self) -> str:
        """Short readable hash of the identity: `<fingerprint[:8]>-<hash of all parts>`."""
        digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:12]
        return f"{self.model[:8]}-{digest}"

    def tags(self) -> dict[str, str]:
        tags = {TAG_SPACE: self.id, TAG_MODEL: self.model, TAG_QUERY_MODE: self.mode, TAG_CONVENTION: self.convention,
                TAG_PCA_SHA: self.pca}
        if self.options:
            tags[TAG_OPTIONS] = json.dumps(dict(sorted(self.options.items())))
        return tags

    @classmethod
    def from_tags(cls, tags: Mapping[str, str], where: str) -> EmbeddingSpace:
        """Read the parts back from tags (upper-case keys); refuse tags whose id does not match their parts."""
        if not tags.get(TAG_MODEL):
            raise GAIRError(f"{where} has no {TAG_MODEL} tag, so the embedding space of its vectors is unknown; "
                            "re-create it with the engine's embed commands")
        try:
            options = json.loads(tags.get(TAG_OPTIONS) or "{}")
        except json.JSONDecodeError as exc:
            raise GAIRError(f"{where}: the {TAG_OPTIONS} tag is not JSON ({exc}); the file is damaged") from exc
        space = cls(tags[TAG_MODEL], tags.get(TAG_QUERY_MODE, ""), tags.get(TAG_CONVENTION, ""),
                    tags.get(TAG_PCA_SHA, ""), {str(k): str(v) for k, v in options.items()})
        if tags.get(TAG_SPACE) != space.id:
            raise GAIRError(f"{where} was written by an older GAIR version or edited: its {TAG_SPACE} tag "
                            f"{tags.get(TAG_SPACE)!r} does not match its other tags; re-create it with the engine")
        return space

    def differences(self, other: EmbeddingSpace, ignore_pca: bool = False) -> list[str]:
        """What differs, in words ("query mode nili vs bilinear"); mode/convention are skipped where one is empty."""
        found = []
        mine, theirs = self.identity(), other.identity()
        for key in sorted(set(mine) | set(theirs), key=lambda k: (k.startswith("option:"), k)):
            a, b = mine.get(key, ""), theirs.get(key, "")
            if a == b or (key == "pca" and ignore_pca):
                continue
            if key in ("mode", "convention") and (not a or not b):
                continue
            label = _LABELS.get(key, key.replace("option:", "option "))
            found.append(f"{label} {a or 'none'} vs {b or 'none'}")
        return found


def model_options(config) -> dict[str, str]:
    """Model options that change the vectors, as identity options; only non-default ones, so the released model's
    identity (and every file made before the option existed) is unchanged."""
    options = {"rs_final_norm": "true"} if getattr(config, "rs_final_norm", False) else {}
    quantization = (getattr(config, "extra", None) or {}).get("quantization")
    if quantization:  # int8 encoders (onnx-int8): close to float32 (cosine ~0.999) but not the same vectors
        options["quantization"] = str(quantization)
    return options


def _space_of(item) -> EmbeddingSpace:
    """The EmbeddingSpace of a raster, layer meta, model bundle or the space itself (anything with `.space`)."""
    if isinstance(item, EmbeddingSpace):
        return item
    space = getattr(item, "space", None)
    if isinstance(space, EmbeddingSpace):
        return space
    meta = getattr(item, "meta", None)
    if meta is not None and isinstance(getattr(meta, "space", None), EmbeddingSpace):
        return meta.space
    raise TypeError(f"no embedding space on {item!r}")


def _name(item, default: str) -> str:
    path = getattr(item, "path", None)
    return path.name if path is not None and hasattr(path, "name") else default


def check_same_space(a, b, names: tuple[str, str] | None = None, ignore_pca: bool = False) -> None:
    """Raise a GAIRError naming what differs unless a and b (rasters, layer metas or spaces) hold comparable vectors.

    ignore_pca: the caller projects full-dims vectors through the other side's PCA itself.
    """
    differences = _space_of(a).differences(_space_of(b), ignore_pca)
    if differences:
        name_a, name_b = names or (_name(a, "the first embedding"), _name(b, "the second embedding"))
        raise GAIRError(f"{name_a} and {name_b} are in different embedding spaces ({'; '.join(differences)}); "
                        "embed both with the same model and settings before comparing them")

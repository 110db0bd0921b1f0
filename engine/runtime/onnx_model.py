"""Running an exported GAIR model with onnxruntime: the GAIRModel API, numpy in/out, without importing torch.

An export folder (written by engine.model.onnx_export) holds three graphs with a dynamic batch axis, the `imnet` weights the
numpy point queries and dense field need, and config.json with the GAIRConfig and the fingerprint of the torch
weights it came from, so rasters made by either backend share one embedding space.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np

from . import field as numpy_field
from ..config import QUERY_MODES, GAIRConfig
from ..errors import GAIRError
from .grid import relative_positions

ONNX_FORMAT = "gair-onnx"
CONFIG_FILE = "config.json"
QUERY_FILE = "query.npz"
# graph name -> (file, input name, output names)
GRAPHS = {
    "rs_tokens": ("rs_tokens.onnx", "x", ("tokens",)),
    "sv": ("sv.onnx", "x", ("pooled", "aligned")),
    "location": ("location.onnx", "lonlat", ("embedding",)),
}
EXPORT_HINT = "export it again with `python -m engine export-onnx <checkpoint or bundle> <out_dir>`"


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise GAIRError("onnxruntime is not installed; `pip install onnxruntime` (or onnxruntime-gpu for CUDA)") from exc
    return onnxruntime


def read_export_meta(folder: Path) -> dict:
    """config.json of an export folder; a clear error for anything else or for missing files."""
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.is_file():
        raise GAIRError(f"{folder} is not a GAIR ONNX export (no {CONFIG_FILE}); {EXPORT_HINT}")
    meta = json.loads(cfg_path.read_text())
    if meta.get("format") != ONNX_FORMAT:
        raise GAIRError(
            f"{cfg_path} has format {meta.get('format')!r}, not {ONNX_FORMAT!r}: this folder is not an ONNX export "
            f"(a torch bundle needs backend='torch'); {EXPORT_HINT}"
        )
    missing = [name for name in [f for f, _, _ in GRAPHS.values()] + [QUERY_FILE] if not (folder / name).is_file()]
    if missing:
        raise GAIRError(f"ONNX export {folder} is incomplete: missing {', '.join(missing)}; {EXPORT_HINT}")
    return meta


def _providers(device: str, available: list[str]) -> tuple[list, str]:
    """onnxruntime providers for 'auto', 'cpu', 'cuda' or 'cuda:N', and the device name the model reports."""
    has_cuda = "CUDAExecutionProvider" in available
    if device == "auto":
        device = "cuda" if has_cuda else "cpu"
    if device == "cpu":
        return ["CPUExecutionProvider"], "cpu"
    if device.startswith("cuda"):
        if not has_cuda:
            raise GAIRError(
                f"device {device!r} requested but onnxruntime has no CUDAExecutionProvider (available: {available}); "
                "install onnxruntime-gpu or use device='cpu' or 'auto'"
            )
        index = int(device.partition(":")[2] or 0)
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"], device
    raise GAIRError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")


class OnnxGAIR:
    """The GAIRModel methods on onnxruntime sessions (created on first use) and numpy queries."""

    def __init__(self, folder: Path, meta: dict, device: str = "auto", threads: int | None = None) -> None:
        self.path = folder
        self.config = GAIRConfig.from_dict(meta["config"])
        self.fingerprint: str = meta["fingerprint"]
        self.dtype = np.dtype(np.float32)
        ort = _onnxruntime()
        self._providers, self.device = _providers(device, ort.get_available_providers())
        self._options = ort.SessionOptions()
        # 0 lets onnxruntime use one thread per physical core; OMP_NUM_THREADS (shared machines, workers) wins.
        self._options.intra_op_num_threads = int(threads if threads is not None else os.environ.get("OMP_NUM_THREADS") or 0)
        self._options.inter_op_num_threads = 1
        self._options.log_severity_level = 3
        self._sessions: dict = {}
        self._lock = threading.Lock()
        with np.load(folder / QUERY_FILE) as q:
            self.imnet = numpy_field.Imnet.from_linear(q["imnet_weight"], q["imnet_bias"])

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto", threads: int | None = None) -> "OnnxGAIR":
        """An export folder (or any file inside it, e.g. the rs_tokens.onnx a file dialog picked)."""
        folder = Path(path)
        if folder.is_file():
            folder = folder.parent
        return cls(folder, read_export_meta(folder), device, threads)

    def __repr__(self) -> str:
        return f"OnnxGAIR({str(self.path)!r}, fingerprint={self.fingerprint}, device={self.device!r})"

    def _run(self, graph: str, array: np.ndarray, outputs: tuple[str, ...] | None = None) -> list[np.ndarray]:
        file, input_name, names = GRAPHS[graph]
        with self._lock:
            session = self._sessions.get(graph)
            if session is None:
                ort = _onnxruntime()
                session = ort.InferenceSession(str(self.path / file), self._options, providers=self._providers)
                self._sessions[graph] = session
        return session.run(list(outputs or names), {input_name: array})

    # ---- encoders -------------------------------------------------------------------------------------------
    def rs_tokens(self, x) -> np.ndarray:
        """(B, C, S, S) preprocessed crops -> (B, G*G, D) tokens, row-major, row 0 at the north edge."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        cfg = self.config
        expected = (cfg.rs_channels, cfg.rs_input_size, cfg.rs_input_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"RS input must be (B, {expected[0]}, {expected[1]}, {expected[2]}) after preprocess_rs; got {x.shape}")
        return self._run("rs_tokens", x)[0]

    def encode_rs(self, x) -> np.ndarray:
        """Crop embedding: mean of the tokens (no final norm, no head), as the reference."""
        return self.rs_tokens(x).mean(axis=1)

    def encode_sv(self, x, aligned: bool = False) -> np.ndarray:
        """Street-view pooler output; aligned=True applies `optical_proj`, the side the RS-SV loss compared."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        s = self.config.sv_input_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, s, s):
            raise ValueError(f"street-view input must be (B, 3, {s}, {s}) after preprocess_sv; got {x.shape}")
        return self._run("sv", x, ("aligned" if aligned else "pooled",))[0]

    def encode_location(self, lonlat) -> np.ndarray:
        """(B, 2) [lon, lat] degrees -> (B, D). The graph takes float64 (its Fourier phases need it, see onnx_export)."""
        lonlat = np.ascontiguousarray(lonlat, dtype=np.float64)
        if lonlat.ndim != 2 or lonlat.shape[1] != 2:
            raise ValueError(f"lonlat must be (B, 2) [lon, lat] degrees; got {lonlat.shape}")
        return self._run("location", lonlat)[0]

    # ---- queries --------------------------------------------------------------------------------------------
    def _tokens(self, tokens) -> np.ndarray:
        tokens = np.asarray(tokens, dtype=np.float32)
        cfg = self.config
        if tokens.ndim != 3 or tokens.shape[2] != cfg.embed_dim:
            raise ValueError(f"tokens must be (B, G*G, {cfg.embed_dim}) from rs_tokens; got {tokens.shape}")
        return tokens

    def query_tokens(self, tokens, rel_xy, mode: str = "nili") -> np.ndarray:
        """Embeddings at points of each crop: rel_xy (B, N, 2) in [0, 1], x from west, y from north -> (B, N, D)."""
        tokens = self._tokens(tokens)
        rel = np.asarray(rel_xy, dtype=np.float64)
        if rel.ndim != 3 or rel.shape[0] != tokens.shape[0] or rel.shape[2] != 2:
            raise ValueError(f"rel_xy must be (B, N, 2) with B={tokens.shape[0]}; got {rel.shape}")
        if mode == "nili":
            return numpy_field.nili_points(tokens, rel, self.imnet, self.config.nili_convention)
        if mode in ("bilinear", "bicubic"):
            return numpy_field.interp_points(tokens, rel, mode)
        return self._unsupported(mode)

    def query_localized(self, x, lonlat, bbox, mode: str = "nili") -> np.ndarray:
        """Embedding of crop x at [lon, lat] inside bbox [lon_min, lat_max, lon_max, lat_min] -> (B, D) or (B, N, D)."""
        ll = np.asarray(lonlat, dtype=np.float64)
        single = ll.ndim == 2
        rel = relative_positions(ll[:, None] if single else ll, np.asarray(bbox, dtype=np.float64))
        out = self.query_tokens(self.rs_tokens(x), rel, mode)
        return out[:, 0] if single else out

    def dense_field(self, tokens, height: int, width: int, mode: str = "nili") -> np.ndarray:
        """(B, H, W, D) embeddings at the pixel centres of an HxW grid over each crop."""
        tokens = self._tokens(tokens)
        if mode == "nili":
            return numpy_field.dense_nili(tokens, height, width, self.imnet, self.config.nili_convention)
        if mode in ("bilinear", "bicubic"):
            return numpy_field.dense_interp(tokens, height, width, mode)
        return self._unsupported(mode)

    @staticmethod
    def _unsupported(mode: str):
        if mode == "transformer":
            raise GAIRError(
                "query mode 'transformer' (the learned query transformer) is not part of the ONNX export; "
                "use mode 'nili', 'bilinear' or 'bicubic', or load the model with backend='torch'"
            )
        raise ValueError(f"unknown query mode {mode!r}; use one of {QUERY_MODES}")

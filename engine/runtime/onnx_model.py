"""Running an exported GAIR model with onnxruntime: the GAIRModel API, numpy in/out, without importing torch.

An export folder (written by engine.model.onnx_export) holds three graphs with a dynamic batch axis, the `imnet`
weights the numpy point queries and dense field need, and config.json with the GAIRConfig and the fingerprint of the
torch weights it came from, so rasters made by either backend share one embedding space.
"""
from __future__ import annotations

import os
import threading
import zipfile
from pathlib import Path

import numpy as np

from ..config import QUERY_MODES, GAIRConfig
from ..errors import GAIRError
from ..io.read_errors import check_readable_file, one_line
from . import field as numpy_field
from .grid import dense_plan, points_plan, relative_positions
from .loading import read_meta
from .protocol import check_lonlat, check_positions, check_rs_input, check_sv_input, check_tokens

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
# Encoders with an int8 twin (`export-onnx --int8`): dynamic quantization, see engine.model.onnx_export.quantize_int8.
# The location graph stays float (its Fourier phases need float64, see onnx_export).
INT8_GRAPHS = ("rs_tokens", "sv")
INT8_OPTION = "int8_dynamic"  # GAIRConfig.extra["quantization"] of an int8 model: part of its embedding space


def int8_file(graph: str) -> str:
    """`rs_tokens.onnx` -> `rs_tokens.int8.onnx`."""
    return GRAPHS[graph][0].removesuffix(".onnx") + ".int8.onnx"


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise GAIRError(
            "onnxruntime is not installed; `pip install onnxruntime` (or onnxruntime-gpu for CUDA)"
        ) from exc
    return onnxruntime


def read_export_meta(folder: Path) -> dict:
    """config.json of an export folder; a clear error for anything else (a torch bundle included) or missing files."""
    meta = read_meta(folder, ONNX_FORMAT, "an ONNX export (a torch bundle needs backend='torch')", EXPORT_HINT)
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
        index = device.partition(":")[2] or "0"
        if not index.isdigit():
            raise GAIRError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
        return [("CUDAExecutionProvider", {"device_id": int(index)}), "CPUExecutionProvider"], device
    raise GAIRError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")


class OnnxGAIR:
    """The onnxruntime backend of engine.runtime.protocol.GAIRModelLike: sessions made on first use, numpy queries."""

    backend = "onnx"

    def __init__(self, folder: Path, meta: dict, device: str = "auto", threads: int | None = None,
                 int8: bool = False) -> None:
        self.path = folder
        self.config = GAIRConfig.from_dict(meta["config"])
        self._files = {name: spec[0] for name, spec in GRAPHS.items()}
        if int8:  # the int8 encoders: ~0.9998 cosine to float32 on the real samples, a space of its own
            missing = [int8_file(g) for g in INT8_GRAPHS if not (folder / int8_file(g)).is_file()]
            if missing:
                raise GAIRError(f"ONNX export {folder} has no int8 encoders ({', '.join(missing)} missing); export it "
                                "with `python -m engine export-onnx <checkpoint or bundle> <out_dir> --int8`")
            self._files.update({g: int8_file(g) for g in INT8_GRAPHS})
            self.backend = "onnx-int8"
            self.config.extra["quantization"] = INT8_OPTION
        self.fingerprint: str = meta["fingerprint"]
        self.dtype = np.dtype(np.float32)
        ort = _onnxruntime()
        self._providers, self.device = _providers(device, ort.get_available_providers())
        self._options = ort.SessionOptions()
        # 0 lets onnxruntime use one thread per physical core; OMP_NUM_THREADS (shared machines, workers) wins.
        threads = threads if threads is not None else os.environ.get("OMP_NUM_THREADS")
        self._options.intra_op_num_threads = int(threads or 0)
        self._options.inter_op_num_threads = 1
        self._options.log_severity_level = 3
        self._sessions: dict = {}
        self._lock = threading.Lock()
        query = check_readable_file(folder / QUERY_FILE, "ONNX export file")
        try:
            with np.load(query, allow_pickle=False) as q:
                self.imnet = numpy_field.Imnet.from_linear(q["imnet_weight"], q["imnet_bias"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise GAIRError(f"cannot read {query}: damaged or cut short ({one_line(exc)}); {EXPORT_HINT}") from exc

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto", threads: int | None = None,
             int8: bool = False) -> OnnxGAIR:
        """An export folder (or any file inside it, e.g. the rs_tokens.onnx a file dialog picked); int8: run its
        int8 encoders (written by `export-onnx --int8`)."""
        folder = Path(path)
        if folder.is_file():
            folder = folder.parent
        return cls(folder, read_export_meta(folder), device, threads, int8)

    def __repr__(self) -> str:
        return (f"OnnxGAIR({str(self.path)!r}, fingerprint={self.fingerprint}, device={self.device!r}"
                + (", int8)" if self.backend == "onnx-int8" else ")"))

    def _run(self, graph: str, array: np.ndarray, outputs: tuple[str, ...] | None = None) -> list[np.ndarray]:
        _, input_name, names = GRAPHS[graph]
        file = self._files[graph]
        with self._lock:
            session = self._sessions.get(graph)
            if session is None:
                ort = _onnxruntime()
                graph_path = check_readable_file(self.path / file, "ONNX graph")
                try:
                    session = ort.InferenceSession(str(graph_path), self._options, providers=self._providers)
                except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types (protobuf, graph)
                    raise GAIRError(f"cannot load ONNX graph {graph_path}: damaged or cut short "
                                    f"({one_line(exc, 160)}); {EXPORT_HINT}") from exc
                self._sessions[graph] = session
        return session.run(list(outputs or names), {input_name: array})

    # ---- encoders -------------------------------------------------------------------------------------------
    def rs_tokens(self, x) -> np.ndarray:
        """(B, C, S, S) preprocessed crops -> (B, G*G, D) tokens, row-major, row 0 at the north edge."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        check_rs_input(x.shape, self.config)
        return self._run("rs_tokens", x)[0]

    def encode_rs(self, x) -> np.ndarray:
        """Crop embedding: mean of the tokens (no final norm, no head), as the reference."""
        return self.rs_tokens(x).mean(axis=1)

    def encode_sv(self, x, aligned: bool = False) -> np.ndarray:
        """Street-view pooler output; aligned=True applies `optical_proj`, the side the RS-SV loss compared."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        check_sv_input(x.shape, self.config)
        return self._run("sv", x, ("aligned" if aligned else "pooled",))[0]

    def encode_location(self, lonlat) -> np.ndarray:
        """(B, 2) [lon, lat] degrees -> (B, D); the graph takes float64 (its Fourier phases need it: onnx_export)."""
        lonlat = np.ascontiguousarray(lonlat, dtype=np.float64)
        check_lonlat(lonlat.shape)
        return self._run("location", lonlat)[0]

    # ---- queries --------------------------------------------------------------------------------------------
    @staticmethod
    def _check_mode(mode: str) -> None:
        if mode == "transformer":
            raise GAIRError(
                "query mode 'transformer' (the learned query transformer) is not part of the ONNX export; "
                "use mode 'nili', 'bilinear' or 'bicubic', or load the model with backend='torch'"
            )
        if mode not in QUERY_MODES:
            raise GAIRError(f"unknown query mode {mode!r}; use one of {', '.join(QUERY_MODES)}")

    def _tokens(self, tokens, mode: str) -> np.ndarray:
        self._check_mode(mode)
        tokens = np.asarray(tokens, dtype=np.float32)
        check_tokens(tokens.shape, self.config)
        return tokens

    def _grid(self, tokens: np.ndarray, mode: str, imnet: numpy_field.Imnet) -> np.ndarray:
        if mode == "nili":
            return numpy_field.nili_grid(tokens, imnet, self.config.nili_convention)
        return numpy_field.cell_grid(tokens)

    def query_tokens(self, tokens, rel_xy, mode: str = "nili") -> np.ndarray:
        """Embeddings at points of each crop: rel_xy (B, N, 2) in [0, 1], x from west, y from north -> (B, N, D)."""
        tokens = self._tokens(tokens, mode)
        rel = np.asarray(rel_xy, dtype=np.float64)
        check_positions(rel.shape, tokens.shape[0])
        plan = points_plan(rel, self.config.rs_grid, mode, self.config.nili_convention)
        return numpy_field.sample_points(self._grid(tokens, mode, self.imnet), plan)

    def query_localized(self, x, lonlat, bbox, mode: str = "nili") -> np.ndarray:
        """Embedding of crop x at [lon, lat] inside bbox [lon_min, lat_max, lon_max, lat_min] -> (B, D) or (B, N, D)."""
        ll = np.asarray(lonlat, dtype=np.float64)
        single = ll.ndim == 2
        rel = relative_positions(ll[:, None] if single else ll, np.asarray(bbox, dtype=np.float64))
        out = self.query_tokens(self.rs_tokens(x), rel, mode)
        return out[:, 0] if single else out

    def dense_field(self, tokens, height: int, width: int, mode: str = "nili") -> np.ndarray:
        """(B, H, W, D) embeddings at the pixel centres of an HxW grid over each crop."""
        tokens = self._tokens(tokens, mode)
        plan = dense_plan(height, width, self.config.rs_grid, mode, self.config.nili_convention)
        return numpy_field.sample_dense(self._grid(tokens, mode, self.imnet), plan)


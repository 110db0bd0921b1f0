"""The GAIR network (torch): model, queries, checkpoints and ONNX export."""
from .gair import GAIRModel

__all__ = ["GAIRModel"]

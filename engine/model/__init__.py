"""The GAIR network (torch)."""
from .gair import GAIRModel, relative_positions

__all__ = ["GAIRModel", "relative_positions"]

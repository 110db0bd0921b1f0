"""`python -m engine <command>`: every command of the engine, one module per area; options from engine.params."""
from .main import build_parser, main

__all__ = ["build_parser", "main"]

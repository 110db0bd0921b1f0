"""Engine log messages (output size estimates, "crop i/n, ~m:ss left", hub downloads) shown where the user looks:
the Processing log of the running algorithm, or the map tool's status line.

The engine reports through the standard `logging` module; while a job runs, a handler forwards the records that the
job's own thread emits, so two jobs running at once never see each other's messages.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .engine_link import engine

Sink = Callable[[str, int], None]  # (message, logging level)


class _ThreadHandler(logging.Handler):
    def __init__(self, sink: Sink, thread: int) -> None:
        super().__init__(logging.INFO)
        self.sink, self.thread = sink, thread

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            return
        try:
            self.sink(record.getMessage(), record.levelno)
        except Exception:  # noqa: BLE001 - a failing display must never fail the job
            self.handleError(record)


@contextmanager
def engine_messages(sink: Sink) -> Iterator[None]:
    """Forward the engine's INFO and WARNING records of the calling thread to `sink` inside the block."""
    logger = logging.getLogger(engine.__name__)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    handler = _ThreadHandler(sink, threading.get_ident())
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def feedback_sink(feedback) -> Sink:
    """Messages into a QgsProcessingFeedback: warnings as warnings, crop progress also as the bar's text."""

    def sink(message: str, level: int) -> None:
        if feedback is None:
            return
        if level >= logging.WARNING:
            feedback.pushWarning(message)
        elif message.startswith("crop "):
            feedback.setProgressText(message)  # the dialog shows it by the bar and in the log
        else:
            feedback.pushInfo(message)

    return sink

"""Exceptions shared by the engine, CLI and plugin."""


class GAIRError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""


class Cancelled(GAIRError):
    """Work stopped because the cancel callback asked for it; no output was left behind."""

"""Log setup: a per-run file handler on the ``antgo`` logger, and console logging for the CLI."""
from __future__ import annotations

import logging
import os
import sys

LOGGER_NAME = "antgo"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATEFMT = "%Y-%m-%d %H:%M:%S"


def add_file_handler(path: str, level: int = logging.INFO) -> logging.Handler:
    """Send the ``antgo`` logger's records at ``level`` and above to ``path`` (appending); return the handler.

    When nobody set a level on the ``antgo`` logger it is lowered to ``level`` for the run, so the file gets
    INFO records even where logging was never configured (a level set explicitly is respected). The caller
    removes the handler with :func:`remove_handler`.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
    log = logging.getLogger(LOGGER_NAME)
    handler._antgo_prev_level = log.level  # type: ignore[attr-defined]
    if log.level == logging.NOTSET and log.getEffectiveLevel() > level:
        log.setLevel(level)  # nobody chose a level for 'antgo': let INFO reach the file
    log.addHandler(handler)
    return handler


def remove_handler(handler: logging.Handler | None) -> None:
    """Detach and close a handler made by :func:`add_file_handler`, restoring the logger level."""
    if handler is None:
        return
    log = logging.getLogger(LOGGER_NAME)
    log.removeHandler(handler)
    handler.close()
    prev = getattr(handler, "_antgo_prev_level", None)
    if prev is not None:
        log.setLevel(prev)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (it may be replaced, e.g. by test capture)."""

    _antgo_console = True

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001
        pass


def setup_console_logging(level: int = logging.INFO) -> None:
    """INFO to stderr for command-line use (idempotent; keeps handlers others installed)."""
    root = logging.getLogger()
    if not any(getattr(h, "_antgo_console", False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger(LOGGER_NAME).setLevel(level)

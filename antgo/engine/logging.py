"""Log setup: a per-run file handler on the ``antgo`` logger, and console logging for the CLI."""
from __future__ import annotations

import logging
import os

# Console output lives in antgo.console (torch-free, for `antgo predict --onnx`); re-exported here.
from antgo.console import DATEFMT, FORMAT, LOGGER_NAME, ConsoleHandler, setup_console_logging  # noqa: F401


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

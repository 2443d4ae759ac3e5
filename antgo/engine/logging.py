"""Log setup: a per-run file handler on the ``antgo`` logger (with console output for the run where nothing
else shows its records), and console logging for the CLI."""
from __future__ import annotations

import logging
import os

# Console output lives in antgo.console (torch-free, for `antgo predict --onnx`); re-exported here.
from antgo.console import (CONSOLE_FORMAT, DATEFMT, FORMAT, LOGGER_NAME, ConsoleHandler,  # noqa: F401
                           setup_console_logging)


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
    if not _logging_configured(log):
        # a script that set up no logging (the design document's Trainer use) would see nothing, not even
        # warnings: with a handler present Python's last-resort stderr output is off
        console = ConsoleHandler()
        console.setLevel(level)
        console.setFormatter(logging.Formatter(CONSOLE_FORMAT, DATEFMT))
        log.addHandler(console)
        handler._antgo_run_console = console  # type: ignore[attr-defined]
    log.addHandler(handler)
    return handler


def _logging_configured(log: logging.Logger) -> bool:
    """Whether some handler other than a run's train.log file handler would show ``log``'s records."""
    current: logging.Logger | None = log
    while current is not None:
        if any(not isinstance(h, logging.FileHandler) or not hasattr(h, "_antgo_prev_level")
               for h in current.handlers):
            return True
        current = current.parent if current.propagate else None
    return False


def remove_handler(handler: logging.Handler | None) -> None:
    """Detach and close a handler made by :func:`add_file_handler`, restoring the logger level."""
    if handler is None:
        return
    log = logging.getLogger(LOGGER_NAME)
    log.removeHandler(handler)
    log.removeHandler(getattr(handler, "_antgo_run_console", None))
    handler.close()
    prev = getattr(handler, "_antgo_prev_level", None)
    if prev is not None:
        log.setLevel(prev)

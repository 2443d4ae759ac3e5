"""Ending a distributed rank's process once its work is done, without interpreter teardown.

Native threads that outlive the Python objects they hold (gloo's workers, daemon threads writing to a closed
stdout) make interpreter teardown abort (SIGABRT) now and then on a loaded machine, and torchrun then reports a
rank that finished its work as failed. A rank therefore ends with ``os._exit`` once everything it owes is done:
unreachable objects are collected first (so finalizers such as the sample cache's folder removal run), then the
log handlers and streams are flushed.
"""
from __future__ import annotations

import gc
import logging
import os
import sys
from typing import NoReturn


def is_launched_rank() -> bool:
    """This process is one rank of a job that torchrun (or another launcher) started."""
    return "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def exit_rank(code: int) -> NoReturn:
    """Collect, flush and end the process with ``code``, skipping interpreter teardown."""
    gc.collect()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed or broken stream must not keep the rank alive
            pass
    os._exit(code)

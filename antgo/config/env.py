"""Settings read from the environment."""
from __future__ import annotations

import os


def env_seconds(name: str, default: float) -> float:
    """``$name`` as a number of seconds, else ``default``; anything else is an error naming the variable."""
    text = os.environ.get(name, "")
    try:
        return float(text) if text else default
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a number of seconds (e.g. {default:g})") from None

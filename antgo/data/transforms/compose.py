"""Build a list of transform configs into one callable, and attach context to failures."""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from antgo.registry import TRANSFORMS

logger = logging.getLogger(__name__)


def transform_name(t: Any) -> str:
    """A readable name for a transform object or function."""
    return getattr(t, "__name__", None) or type(t).__name__


def reraise_with_context(exc: BaseException, context: str) -> None:
    """Raise ``exc`` again with ``context`` prepended to its message.

    The exception type is kept when it can be rebuilt from one message (so callers can still catch
    ``ValueError``, ``FileNotFoundError``, ...); otherwise the context is attached as a note.
    """
    message = f"{context}: {exc}"
    try:
        new = type(exc)(message)
    except Exception:  # custom __init__ signatures: keep the original object
        exc.add_note(context)
        raise exc
    raise new.with_traceback(exc.__traceback__) from exc


@TRANSFORMS.register_module()
class Compose:
    """Apply transforms in order; each is a config dict (built with ``TRANSFORMS``) or a callable.

    A transform that returns None is an error (it would silently drop the sample).
    """

    def __init__(self, transforms: Sequence[Mapping[str, Any] | Callable] | None = None,
                 key_path: str = "pipeline") -> None:
        self.transforms: list[Callable] = []
        for i, t in enumerate(transforms or []):
            if isinstance(t, Mapping):
                self.transforms.append(TRANSFORMS.build(t, key_path=f"{key_path}[{i}]"))
            elif callable(t):
                self.transforms.append(t)
            else:
                raise TypeError(f"{key_path}[{i}] must be a transform config dict or a callable, got {type(t).__name__}")

    @property
    def names(self) -> list[str]:
        return [transform_name(t) for t in self.transforms]

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        for i, t in enumerate(self.transforms):
            try:
                out = t(results)
            except Exception as exc:
                reraise_with_context(exc, f"transform #{i} {transform_name(t)} failed")
            if out is None:
                raise TypeError(f"transform #{i} {transform_name(t)} returned None; a transform must return the dict")
            results = out
        return results

    def __repr__(self) -> str:
        return f"Compose({' -> '.join(self.names)})"

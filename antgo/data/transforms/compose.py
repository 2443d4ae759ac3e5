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


class SampleKeyError(KeyError):
    """A ``KeyError`` with context, shown as written (``KeyError`` shows the repr of its message, so every
    re-raise would add a level of quotes)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _message(exc: BaseException) -> str:
    if type(exc).__str__ is KeyError.__str__ and len(exc.args) == 1:
        arg = exc.args[0]  # a sentence as written; a bare key as KeyError shows it
        return arg if isinstance(arg, str) and " " in arg else f"KeyError {arg!r}"
    return str(exc)


def reraise_with_context(exc: BaseException, context: str, hint: str = "") -> None:
    """Raise ``exc`` again with ``context`` prepended to its message (and ``hint`` appended).

    The exception type is kept when it can be rebuilt from one message (so callers can still catch
    ``ValueError``, ``FileNotFoundError``, ...); otherwise the context is attached as a note. A plain
    ``KeyError`` becomes a :class:`SampleKeyError` (still a ``KeyError``) so the message reads without quotes.
    """
    message = f"{context}: {_message(exc)}{hint}"
    try:
        new = (SampleKeyError if type(exc) is KeyError else type(exc))(message)
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
                raise TypeError(f"{key_path}[{i}] must be a transform config dict or a callable, "
                                f"got {type(t).__name__}")

    @property
    def names(self) -> list[str]:
        return [transform_name(t) for t in self.transforms]

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        given = None if "image" in results else sorted(results)  # what sample() returned, for the hint
        for i, t in enumerate(self.transforms):
            try:
                out = t(results)
            except Exception as exc:
                hint = (f"; the data set's sample() returned no 'image' (its keys: {given}): return the decoded "
                        f"image under 'image'" if given is not None and isinstance(exc, KeyError) else "")
                reraise_with_context(exc, f"transform #{i} {transform_name(t)} failed", hint)
            if out is None:
                raise TypeError(f"transform #{i} {transform_name(t)} returned None; a transform must return the dict")
            results = out
        return results

    def __repr__(self) -> str:
        return f"Compose({' -> '.join(self.names)})"

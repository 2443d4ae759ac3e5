"""``ConfigDict``: a ``dict`` with attribute access, and ``ConfigError``.

``ConfigDict`` stays a real ``dict`` subclass so ``isinstance(x, dict)`` holds, ``Registry.build`` accepts it
and ``pickle``/``copy.deepcopy`` use the ordinary dict protocol (DataLoader workers and Prefect pickle configs).
"""
from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable, Mapping
from typing import Any


class ConfigError(ValueError):
    """A config file, key or override that cannot be used; the message says where and how to fix it."""


def close_matches(word: str, candidates: Iterable[Any], cutoff: float = 0.6) -> list[str]:
    """Up to three candidates that look like ``word`` (for 'did you mean' hints)."""
    return difflib.get_close_matches(str(word), [str(c) for c in candidates], n=3, cutoff=cutoff)


def missing_key_hint(key: str, available: Iterable[Any]) -> str:
    """' Did you mean 'lr'? Available keys: lr, momentum.' -- the tail of every missing-key message."""
    available = list(available)
    close = close_matches(key, available)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    shown = ", ".join(str(k) for k in available[:30]) + (", ..." if len(available) > 30 else "")
    return f"{hint} Available keys: {shown or '(none)'}."


def to_config_value(value: Any) -> Any:
    """Dicts (also inside lists and tuples) become ``ConfigDict``; lists stay lists, tuples stay tuples."""
    if isinstance(value, Mapping) and not isinstance(value, ConfigDict):
        return ConfigDict(value)
    if isinstance(value, list):
        return [to_config_value(v) for v in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):  # leave namedtuples alone
        return tuple(to_config_value(v) for v in value)
    return value


def to_plain(value: Any) -> Any:
    """Recursively turn ``ConfigDict`` into ``dict`` (lists stay lists, tuples stay tuples)."""
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(to_plain(v) for v in value)
    return value


class ConfigDict(dict):
    """A dict whose keys are also attributes: ``cfg.model.backbone.type``.

    Keys that shadow dict methods (``keys``, ``items``, ``get``, ``update``, ...) are reachable only with
    ``cfg['keys']``: attribute lookup finds the method first, as in every dict.
    """

    __slots__ = ()  # no instance __dict__: attributes are keys, and pickling needs no extra state

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.update(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            if name.startswith("__"):  # protocol probes (__deepcopy__, __setstate__, ...): stay silent and fast
                raise AttributeError(name) from None
            raise AttributeError(f"config has no key '{name}'.{missing_key_hint(name, self.keys())}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(f"config has no key '{name}'.{missing_key_hint(name, self.keys())}") from None

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, to_config_value(value))

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Like ``dict.update``, converting nested dicts to ``ConfigDict``."""
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def copy(self) -> "ConfigDict":
        return ConfigDict(self)

    def __copy__(self) -> "ConfigDict":
        return ConfigDict(self)

    def __deepcopy__(self, memo: dict) -> "ConfigDict":
        new = ConfigDict()
        memo[id(self)] = new
        for key, value in self.items():
            dict.__setitem__(new, copy.deepcopy(key, memo), copy.deepcopy(value, memo))
        return new

    def __reduce__(self) -> tuple:
        return (ConfigDict, (dict(self),))

    def __repr__(self) -> str:
        return f"ConfigDict({dict.__repr__(self)})"

    def to_dict(self) -> dict:
        """A plain nested ``dict`` copy (no ``ConfigDict`` inside)."""
        return to_plain(self)

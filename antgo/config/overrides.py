"""Dotted command-line overrides (``optimizer.lr=0.01``, ``data.train.pipeline.1.target_dim=[128,128]``).

Overrides are strict: every path must exist (``+key=value`` adds a new key on purpose), list indices must be
in range, and the new value must be compatible with the old one (see ``check_compatible``).
"""
from __future__ import annotations

import ast
import inspect
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .configdict import ConfigError, missing_key_hint, to_config_value, to_plain
from .loader import DELETE_KEY, merge_dicts, strip_delete_keys

logger = logging.getLogger("antgo.config")

_MISSING = object()


def parse_cfg_options(options: Iterable[str]) -> dict[str, Any]:
    """``['a.b=1', 'c=[1,2]', 'name=abc']`` -> ``{'a.b': 1, 'c': [1, 2], 'name': 'abc'}``.

    Values are Python literals (``ast.literal_eval``); anything that is not a literal stays a string, so
    ``work_dir=out/run1`` needs no quotes. ``a=1,2`` is the tuple ``(1, 2)``.
    """
    parsed: dict[str, Any] = {}
    for option in options:
        key, sep, raw = str(option).partition("=")
        key = key.strip()
        if not sep or not key.lstrip("+"):
            raise ConfigError(f"config override '{option}' must look like key=value (e.g. optimizer.lr=0.01)")
        parsed[key] = parse_value(raw.strip())
    return parsed


def parse_value(raw: str) -> Any:
    """A Python literal if ``raw`` is one, else ``raw`` itself."""
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return raw


def _type_name(value: Any) -> str:
    return "dict" if isinstance(value, dict) else type(value).__name__


def check_compatible(key: str, old: Any, new: Any, where: str) -> Any:
    """The value to store for ``key`` when overriding ``old`` with ``new``; ConfigError if they do not fit.

    Rules: an old ``None`` accepts anything and ``None`` may replace anything (to switch a feature off);
    ``bool`` only accepts ``bool``; ``int`` and ``float`` accept each other (a float key keeps a float);
    ``list`` and ``tuple`` accept each other and keep the old container type; a class or function (a
    ``type=`` entry) accepts a registry name string; otherwise the new value must be an instance of the
    old value's type.
    """
    if old is None or new is None:
        return new
    if isinstance(old, bool) or isinstance(new, bool):
        if isinstance(old, bool) and isinstance(new, bool):
            return new
    elif isinstance(old, (int, float)) and isinstance(new, (int, float)):
        return float(new) if isinstance(old, float) else new
    elif isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return type(old)(new)
    elif (inspect.isclass(old) or inspect.isroutine(old)) and isinstance(new, str):
        return new
    elif isinstance(new, type(old)):
        return new
    hint = ""
    if isinstance(old, bool) and isinstance(new, str):
        hint = " Write booleans as True or False."
    elif isinstance(old, str):
        hint = f" Quote the value to pass it as a string: {key}=\"'...'\"."
    elif isinstance(new, str):
        hint = f" The value {new!r} was not a Python literal, so it was read as a string; check its spelling."
    raise ConfigError(f"{where}: override '{key}' expects {_type_name(old)} (current value {old!r}), "
                      f"got {_type_name(new)} {new!r}.{hint}")


def _index(container: list | tuple, part: str, path: str, full_key: str, where: str) -> int:
    try:
        index = int(part)
    except ValueError:
        raise ConfigError(f"{where}: override '{full_key}': '{path}' is a {_type_name(container)}; "
                          f"use a number 0..{len(container) - 1} instead of '{part}'") from None
    if not -len(container) <= index < len(container):
        raise ConfigError(f"{where}: override '{full_key}': index {index} is out of range for '{path}' "
                          f"({_type_name(container)} of length {len(container)}; valid: 0..{len(container) - 1})")
    return index


def _assign(node: Any, parts: list[str], value: Any, ctx: dict) -> Any:
    """Set ``value`` at ``parts`` below ``node``; returns the (possibly new) node, because a tuple on the
    path has to be rebuilt instead of mutated."""
    part, rest = parts[0], parts[1:]
    path = ".".join(p for p in (ctx["done"], part) if p)
    if isinstance(node, Mapping):
        old = node.get(part, _MISSING)
        if old is _MISSING:
            if not ctx["allow_new"]:
                _raise_missing(node, part, ctx)
            old = {} if rest else None  # '+a.b.c=1' creates the dicts it needs
    elif isinstance(node, (list, tuple)):
        part = _index(node, part, ctx["done"], ctx["key"], ctx["where"])
        old = node[part]
    else:
        raise ConfigError(f"{ctx['where']}: override '{ctx['key']}': '{ctx['done']}' is a {_type_name(node)} "
                          f"({node!r}), not a dict or list, so it has no key '{part}'")
    if rest:
        ctx["done"] = path
        new = _assign(old, rest, value, ctx)
    elif isinstance(old, Mapping) and isinstance(value, Mapping):
        # as in a _base_ merge (and mmengine): a dict merges into the dict it overrides, unless it holds
        # _delete_=True, which replaces it
        plain = to_plain(value)
        merged = plain if plain.get(DELETE_KEY) else merge_dicts(to_plain(old), plain)
        new = to_config_value(strip_delete_keys(merged))
        ctx["old"] = old
    else:
        new = check_compatible(ctx["key"], old, strip_delete_keys(value), ctx["where"])
        ctx["old"] = None if old is _MISSING else old
    if isinstance(node, tuple):
        return tuple(new if i == part % len(node) else v for i, v in enumerate(node))
    node[part] = new
    return node


def _raise_missing(node: Mapping, part: str, ctx: dict) -> None:
    under = f"under '{ctx['done']}'" if ctx["done"] else "at the top level"
    raise ConfigError(f"{ctx['where']}: override '{ctx['key']}': no key '{part}' {under}."
                      f"{missing_key_hint(part, node.keys())} To add a new key on purpose, write "
                      f"'+{ctx['key']}=...'.")


def apply_overrides(cfg: dict, options: Mapping[str, Any], where: str, allow_new: bool = False) -> None:
    """Apply dotted-key overrides to ``cfg`` in place, logging each change."""
    for raw_key, value in options.items():
        raw_key = str(raw_key)
        add = allow_new or raw_key.startswith("+")
        key = raw_key.lstrip("+")
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"{where}: override key '{raw_key}' has an empty part; write keys like 'a.b.0.c'")
        bracketed = re.sub(r"\[(\d+)\]", r".\1", raw_key)
        if bracketed != raw_key:  # pipeline[1].type: list indices are dotted parts here
            raise ConfigError(f"{where}: override key '{raw_key}' indexes a list with brackets; write the index as "
                              f"a dotted part: '{bracketed}'")
        ctx = {"key": key, "done": "", "where": where, "allow_new": add, "old": None}
        _assign(cfg, parts, to_config_value(value), ctx)
        logger.info("config override %s: %r -> %r", key, ctx["old"], value)

"""Writing a config back as Python source (``Config.pretty_text`` / ``Config.dump``) and flattening it to
dotted keys (``Config.flatten``, for MLflow params).

The text is written so that ``Config.fromfile`` reads back an equal config: tuples stay tuples, floats use
``repr`` (exact), and a class or function used as a value becomes ``import module`` + ``module.Name``.
"""
from __future__ import annotations

import inspect
import keyword
import math
from collections.abc import Mapping
from typing import Any

from .configdict import ConfigError

WIDTH = 100  # fold a container over several lines when its one-line form would pass this column
INDENT = 4
_SCALARS = (type(None), bool, int, str, bytes)


def format_config(cfg: Mapping[str, Any]) -> str:
    """Python source with one ``key = value`` assignment per top-level key."""
    imports: set[str] = set()
    lines = []
    for key, value in cfg.items():
        if not isinstance(key, str) or not key.isidentifier() or keyword.iskeyword(key) or key.startswith("_"):
            raise ConfigError(f"cannot write top-level key {key!r} as a config variable: top-level keys must be "
                              f"Python identifiers that do not start with '_'; rename it")
        lines.append(f"{key} = {_fmt(value, 0, len(key) + 3, key, imports)}")
    header = "".join(f"import {module}\n" for module in sorted(imports))
    return (header + "\n" if header else "") + "\n".join(lines) + "\n"


def _is_identifier_key(key: Any) -> bool:
    return isinstance(key, str) and key.isidentifier() and not keyword.iskeyword(key)


def _fmt(value: Any, indent: int, column: int, path: str, imports: set[str]) -> str:
    """Source for ``value``; ``indent`` is the indentation of its line, ``column`` where it starts."""
    if isinstance(value, _SCALARS):
        return repr(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else f"float('{value}')"
    if inspect.isclass(value) or inspect.isroutine(value):
        return _fmt_importable(value, path, imports)
    if isinstance(value, Mapping):
        if all(_is_identifier_key(k) for k in value):
            items = [(f"{k}=", v, f"{path}.{k}") for k, v in value.items()]
            return _fmt_container("dict(", ")", items, indent, column, imports, empty="dict()")
        items = [(f"{_fmt_key(k, path)}: ", v, f"{path}.{k}") for k, v in value.items()]
        return _fmt_container("{", "}", items, indent, column, imports)
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        items = [("", v, f"{path}.{i}") for i, v in enumerate(value)]
        if isinstance(value, list):
            return _fmt_container("[", "]", items, indent, column, imports)
        single = "," if len(value) == 1 else ""
        return _fmt_container("(", single + ")", items, indent, column, imports, empty="()")
    raise ConfigError(f"cannot write the value at '{path}' ({type(value).__name__}: {repr(value)[:60]}) as "
                      f"config source; use None, bool, int, float, str, list, tuple or dict there")


def _fmt_key(key: Any, path: str) -> str:
    if isinstance(key, (*_SCALARS, float)):
        return repr(key)
    raise ConfigError(f"cannot write dict key {key!r} under '{path}'; use str or int keys")


def _fmt_importable(value: Any, path: str, imports: set[str]) -> str:
    module, name = getattr(value, "__module__", None), getattr(value, "__qualname__", "")
    if module == "builtins":
        return name
    if not module or module in ("__main__", "__antgo_config__") or "<" in name:
        raise ConfigError(f"cannot write '{path}' = {value!r}: it is defined in a config file, a script or a "
                          f"function, so it cannot be imported back; register it and use its name as a string")
    module = _public_module(value, module, name)
    imports.add(module)
    return f"{module}.{name}"


def _public_module(value: Any, module: str, qualname: str) -> str:
    """The shortest parent package that exposes ``value`` under its name (``torch.optim`` for
    ``torch.optim.sgd.SGD``): some packages delete their submodule attributes, so the defining module may not be
    reachable as an attribute when the dumped file is read back."""
    import importlib

    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        candidate = ".".join(parts[:i])
        try:
            obj: Any = importlib.import_module(candidate)
            for attr in qualname.split("."):
                obj = getattr(obj, attr)
        except (ImportError, AttributeError):
            continue
        if obj is value:
            return candidate
    return module


def _fmt_container(open_: str, close: str, items: list[tuple[str, Any, str]], indent: int, column: int,
                   imports: set[str], empty: str | None = None) -> str:
    if not items:
        return empty if empty is not None else open_ + close.lstrip(",")
    inner = indent + INDENT
    parts = [prefix + _fmt(v, inner, inner + len(prefix), p, imports) for prefix, v, p in items]
    one_line = open_ + ", ".join(parts) + close
    if "\n" not in one_line and column + len(one_line) <= WIDTH:
        return one_line
    pad = " " * inner
    body = "".join(f"{pad}{part},\n" for part in parts)
    return f"{open_}\n{body}{' ' * indent}{close.lstrip(',')}"


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{'optimizer.lr': 0.05, 'data.train.pipeline.0.type': 'Rotation', ...}``; empty dicts and lists are
    kept as values so no key disappears."""
    if isinstance(value, Mapping) and value:
        children = value.items()
    elif isinstance(value, (list, tuple)) and value and not hasattr(value, "_fields"):
        children = enumerate(value)
    else:
        return {prefix: value} if prefix else {}
    flat: dict[str, Any] = {}
    for key, child in children:
        flat.update(flatten(child, f"{prefix}.{key}" if prefix else str(key)))
    return flat

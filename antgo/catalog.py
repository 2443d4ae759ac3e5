"""What is built in: the registered models, transforms, datasets, metrics and hooks with one-line descriptions
(``antgo list``)."""
from __future__ import annotations

import importlib
import inspect

from antgo import registry

KINDS = {"models": "MODELS", "transforms": "TRANSFORMS", "datasets": "DATASETS", "metrics": "METRICS",
         "hooks": "HOOKS"}
# Importing these registers the built-ins (each package registers its classes on import).
_PACKAGES = {"models": ("antgo.models",), "transforms": ("antgo.data",), "datasets": ("antgo.data",),
             "metrics": ("antgo.metrics",), "hooks": ("antgo.engine.hooks.builder",)}


def describe(obj: object, width: int = 100) -> str:
    """The first sentence of the object's own docstring, on one line of at most ``width`` characters."""
    doc = inspect.getdoc(obj) if obj.__doc__ else None
    if not doc:
        return ""
    text = " ".join(doc.split("\n\n")[0].split()).replace("``", "")
    end = text.find(". ")
    text = text[: end + 1] if 0 < end else text
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


def entries(kind: str) -> list[tuple[str, str]]:
    """``(name, description)`` of every entry of one kind, sorted by name."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    for name in _PACKAGES[kind]:
        importlib.import_module(name)
    reg = getattr(registry, KINDS[kind])
    return [(name, describe(reg.get(name))) for name in reg.keys()]


def format_catalog(kind: str | None = None) -> str:
    """The text ``antgo list [kind]`` prints: a section per kind, one aligned line per entry."""
    lines: list[str] = []
    for k in [kind] if kind else list(KINDS):
        items = entries(k)
        width = max((len(n) for n, _ in items), default=0)
        lines.append(f"{k} ({len(items)}):")
        lines += [f"  {name.ljust(width)}  {text}" for name, text in items]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"

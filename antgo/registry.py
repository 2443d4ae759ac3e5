"""Name -> class registries that turn config dicts into objects.

One flat ``Registry`` class (no scopes, no parents). Legacy names from the design document are
aliases of the same objects: ``PIPELINES is TRANSFORMS``, ``HEADS is BACKBONES is MODELS``,
``MEASURES is METRICS``.
"""
from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Callable

from antgo.config.configdict import close_matches

logger = logging.getLogger(__name__)


def close_names(word: str, candidates: Iterable[Any], cutoff: float = 0.6) -> list[str]:
    """Up to three candidates that look like ``word``, ignoring case ('segmiou' finds 'SegMIOU')."""
    by_lower: dict[str, str] = {}
    for candidate in candidates:
        by_lower.setdefault(str(candidate).lower(), str(candidate))
    return [by_lower[match] for match in close_matches(str(word).lower(), by_lower, cutoff=cutoff)]


class RegistryError(KeyError):
    """A type name that no registry entry matches, or a malformed build config."""

    def __str__(self) -> str:  # KeyError would repr() the message and show quotes and \n
        return str(self.args[0]) if self.args else ""


def _may_replace(existing: Callable, new: Callable) -> bool:
    """A user class may take over a built-in name (the design document's samples re-declare
    ``EncoderDecoder`` and ``SegMIOU``), and a re-imported module may re-register its own class."""
    builtin = getattr(existing, "__module__", "").startswith("antgo.")
    same_definition = (getattr(existing, "__module__", None), getattr(existing, "__qualname__", None)) == (
        getattr(new, "__module__", None), getattr(new, "__qualname__", None))
    return (builtin and not getattr(new, "__module__", "").startswith("antgo.")) or same_definition


class Registry:
    """Maps type names to classes (or factory functions) and builds them from config dicts."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._modules: dict[str, Callable] = {}

    def __repr__(self) -> str:
        return f"Registry(name={self.name!r}, items={sorted(self._modules)})"

    def __len__(self) -> int:
        return len(self._modules)

    def __contains__(self, name: object) -> bool:
        return name in self._modules

    def keys(self) -> list[str]:
        return sorted(self._modules)

    def get(self, name: str) -> Callable | None:
        """The registered object, or None."""
        return self._modules.get(name)

    def _add(self, module: Callable, name: str | list[str] | None, force: bool) -> None:
        if not (inspect.isclass(module) or callable(module)):
            raise TypeError(f"{self.name}: only classes or functions can be registered, got {type(module)}")
        names = [module.__name__] if name is None else ([name] if isinstance(name, str) else list(name))
        for key in names:
            existing = self._modules.get(key)
            if existing is not None and existing is not module and not force:
                if _may_replace(existing, module):
                    logger.warning("%s: '%s' now refers to %s.%s (replacing %s.%s)", self.name, key,
                                   module.__module__, module.__qualname__, existing.__module__, existing.__qualname__)
                    self._modules[key] = module
                    continue
                raise RegistryError(
                    f"{self.name}: '{key}' is already registered to {existing.__module__}.{existing.__qualname__}; "
                    f"pick another name or pass force=True to replace it"
                )
            self._modules[key] = module

    def register_module(self, name: str | list[str] | None = None, force: bool = False,
                        module: Callable | None = None) -> Callable:
        """Register ``module`` directly, or return a decorator that registers the decorated object.

        The decorated object is returned unchanged, so the user's name keeps pointing at their class.
        """
        if module is not None:
            self._add(module, name, force)
            return module

        def decorator(obj: Callable) -> Callable:
            self._add(obj, name, force)
            return obj

        return decorator

    def missing_message(self, type_name: str, key_path: str | None = None) -> str:
        where = f" (config key '{key_path}.type')" if key_path else ""
        from antgo.catalog import KINDS  # the catalog imports this module

        close = close_names(type_name, self._modules)
        hint = f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""
        kind = {name: kind for kind, name in KINDS.items()}.get(self.name)
        listing = f" `python -m antgo list {kind}` lists them all." if kind else ""
        return (
            f"{self.name} has no type '{type_name}'{where}.{hint}{listing} "
            f"If it is your own class, import the module that registers it, or list that module in the config: "
            f"custom_imports = dict(imports=['my_pkg.my_module'])."
        )

    def build(self, cfg: Mapping[str, Any], default_args: Mapping[str, Any] | None = None,
              key_path: str | None = None) -> Any:
        """Instantiate ``cfg['type']`` with the remaining keys (plus ``default_args``) as keyword arguments.

        ``cfg`` is not modified. ``key_path`` names where the dict sits in the config, for error messages.
        """
        if not isinstance(cfg, Mapping):
            raise TypeError(f"{self.name}: config{' ' + repr(key_path) if key_path else ''} must be a dict, "
                            f"got {type(cfg).__name__}")
        args = {k: copy.deepcopy(v) for k, v in cfg.items()}
        if "type" not in args:
            raise RegistryError(f"{self.name}: config {key_path or ''} has no 'type' key; "
                                f"add type='<name>' (one of: {', '.join(self.keys()[:20])})")
        obj_type = args.pop("type")
        for key, value in (default_args or {}).items():
            args.setdefault(key, value)
        if isinstance(obj_type, str):
            obj_cls = self._modules.get(obj_type)
            if obj_cls is None:
                raise RegistryError(self.missing_message(obj_type, key_path))
        elif callable(obj_type):
            obj_cls = obj_type
        else:
            raise TypeError(f"{self.name}: 'type' must be a name or a class, got {obj_type!r}")
        try:
            return obj_cls(**args)
        except TypeError as exc:
            where = f" at config key '{key_path}'" if key_path else ""
            name = getattr(obj_cls, "__name__", obj_cls)
            quoted = quoted_numbers(obj_cls, args)
            hint = (f"; {key_path + '.' if key_path else ''}{quoted[0]} is the string {args[quoted[0]]!r} where "
                    f"{name} takes a number: write {quoted[0]}={args[quoted[0]]} without quotes" if quoted else "")
            raise TypeError(f"{self.name}: building {name}{where} failed: {exc}{hint}") from exc


def quoted_numbers(fn: Callable[..., Any], args: Mapping[str, Any]) -> list[str]:
    """The arguments given as strings where ``fn``'s default is a number (``lr='3e-3'``): written with quotes."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return []
    return [key for key, value in args.items() if isinstance(value, str) and key in params
            and isinstance(params[key].default, (int, float)) and not isinstance(params[key].default, bool)]


DATASETS = Registry("DATASETS")
TRANSFORMS = Registry("TRANSFORMS")
PIPELINES = TRANSFORMS
MODELS = Registry("MODELS")
BACKBONES = HEADS = NECKS = LOSSES = SEGMENTORS = CLASSIFIERS = MODELS
METRICS = Registry("METRICS")
MEASURES = METRICS
HOOKS = Registry("HOOKS")
OPTIMIZERS = Registry("OPTIMIZERS")
LR_SCHEDULERS = Registry("LR_SCHEDULERS")

__all__ = [
    "Registry", "RegistryError", "close_names", "quoted_numbers", "DATASETS", "TRANSFORMS", "PIPELINES", "MODELS", "BACKBONES", "HEADS",
    "NECKS", "LOSSES", "SEGMENTORS", "CLASSIFIERS", "METRICS", "MEASURES", "HOOKS", "OPTIMIZERS", "LR_SCHEDULERS",
]

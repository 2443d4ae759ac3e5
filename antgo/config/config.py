"""``Config``: the loaded experiment configuration (a mapping with attribute access, a file name and the
source text), built from a Python config file or a dict."""
from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any

from antgo.fileio import atomic_write_text

from .configdict import ConfigDict, ConfigError, missing_key_hint, to_plain
from .formatting import flatten, format_config
from .loader import import_custom_modules as _import_custom_modules
from .loader import check_top_level_keys, load_file, strip_delete_keys
from .overrides import apply_overrides, parse_cfg_options
from .secrets import mask_secrets

logger = logging.getLogger("antgo.config")

CfgOptions = Iterable[str] | Mapping[str, Any] | None


class Config(MutableMapping):
    """A configuration: ``cfg.model.backbone.type``, ``cfg['optimizer']``, ``cfg.get('seed', 0)``.

    The top level is a ``Mapping`` (not a ``dict``); everything below it is ``ConfigDict``, a ``dict``.
    The properties ``filename``, ``text`` and ``pretty_text`` shadow top-level keys of the same name;
    reach such keys with ``cfg['text']``.
    """

    def __init__(self, cfg_dict: Mapping[str, Any] | None = None, filename: str | os.PathLike | None = None,
                 text: str = "") -> None:
        if cfg_dict is None:
            cfg_dict = {}
        if not isinstance(cfg_dict, Mapping):
            raise ConfigError(f"Config() takes a dict, got {type(cfg_dict).__name__}")
        bad = [k for k in cfg_dict if not isinstance(k, str)]
        if bad:
            raise ConfigError(f"config keys must be strings; got {bad!r}")
        object.__setattr__(self, "_cfg_dict", ConfigDict(cfg_dict))
        object.__setattr__(self, "_filename", os.path.abspath(filename) if filename is not None else None)
        object.__setattr__(self, "_text", text)

    # -- loading ---------------------------------------------------------------------------------------
    @classmethod
    def fromfile(cls, path: str | os.PathLike, cfg_options: CfgOptions = None,
                 import_custom_modules: bool = True) -> "Config":
        """Load a Python config file with its ``_base_`` files, apply ``cfg_options`` (``['a.b=1']`` or
        ``{'a.b': 1}``), then import ``custom_imports``. Executing a config runs its code: trusted files only."""
        path = os.path.abspath(os.fspath(path))
        if not os.path.isfile(path):
            raise ConfigError(f"config file {path} does not exist; check the path (relative paths are "
                              f"resolved from {os.getcwd()})")
        if not path.endswith(".py"):
            raise ConfigError(f"config file {path}: only Python (.py) config files are supported")
        variables, texts = load_file(path)
        cfg = cls(strip_delete_keys(variables), filename=path, text="\n".join(texts))
        if cfg_options:
            cfg.merge_from_dict(cfg_options)
        if import_custom_modules and "custom_imports" in cfg:
            _import_custom_modules(cfg["custom_imports"], path)
        return cfg

    def merge_from_dict(self, options: CfgOptions, allow_new: bool = False) -> None:
        """Apply dotted-key overrides in place: ``{'optimizer.lr': 0.01, 'data.train.pipeline.1.target_dim':
        (128, 128)}`` or ``['optimizer.lr=0.01']``. Unknown keys, out-of-range indices and incompatible types
        raise ``ConfigError``; a key written ``+a.b`` (or ``allow_new=True``) may add a new key."""
        if options is None:
            return
        if not isinstance(options, Mapping):
            if isinstance(options, (str, bytes)):
                options = [options]
            options = parse_cfg_options(options)
        apply_overrides(self._cfg_dict, options, self._where(), allow_new=allow_new)

    # -- mapping protocol ------------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        try:
            return self._cfg_dict[key]
        except KeyError:
            raise KeyError(self._missing_message(key)) from None

    def __setitem__(self, key: str, value: Any) -> None:
        self._cfg_dict[key] = value

    def __delitem__(self, key: str) -> None:
        del self._cfg_dict[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._cfg_dict)

    def __len__(self) -> int:
        return len(self._cfg_dict)

    def __contains__(self, key: object) -> bool:
        return key in self._cfg_dict

    def get(self, key: str, default: Any = None) -> Any:
        return self._cfg_dict.get(key, default)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # internals and protocol probes; also keeps unpickling from recursing
            raise AttributeError(name)
        try:
            return self._cfg_dict[name]
        except KeyError:
            raise AttributeError(self._missing_message(name)) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_") or hasattr(type(self), name):
            raise AttributeError(f"cannot set '{name}' as an attribute of Config; use cfg[{name!r}] = ...")
        self._cfg_dict[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self._cfg_dict[name]
        except KeyError:
            raise AttributeError(self._missing_message(name)) from None

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Config):
            return self._cfg_dict == other._cfg_dict
        return isinstance(other, Mapping) and self._cfg_dict == dict(other)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Config(filename={self._filename!r}, {dict.__repr__(self._cfg_dict)})"

    # -- copying and pickling (DataLoader workers, Prefect) ---------------------------------------------
    def __reduce__(self) -> tuple:
        return (_restore, (self._cfg_dict, self._filename, self._text))

    def __copy__(self) -> "Config":
        return _restore(self._cfg_dict.copy(), self._filename, self._text)

    def __deepcopy__(self, memo: dict) -> "Config":
        return _restore(copy.deepcopy(self._cfg_dict, memo), self._filename, self._text)

    # -- information and output ------------------------------------------------------------------------
    @property
    def filename(self) -> str | None:
        """Absolute path of the file this config was loaded from, or None."""
        return self._filename

    @property
    def text(self) -> str:
        """Source text of the file and its bases (bases first, each headed by its path); '' without a file."""
        return self._text

    @property
    def pretty_text(self) -> str:
        """The current config (overrides included) as Python source that ``Config.fromfile`` reads back."""
        return format_config(self._cfg_dict)

    def masked_text(self) -> str:
        """``pretty_text`` with the values of secret-looking keys (token, password, ...) replaced by
        ``antgo.config.secrets.MASK``: the form in which a config leaves the process (dumped file, checkpoint)."""
        return format_config(mask_secrets(self._cfg_dict))

    def dump(self, path: str | os.PathLike, mask: bool = True) -> str:
        """Write the config as Python to ``path`` (a .py file; parent folders are created), atomically;
        secret values are masked unless ``mask=False``. Returns the path."""
        path = os.fspath(path)
        if not path.endswith(".py"):
            raise ConfigError(f"cannot dump config to {path}: the file name must end in .py")
        text = self.masked_text() if mask else self.pretty_text
        atomic_write_text(path, text)  # a reader never sees half a config
        logger.debug("config written to %s", path)
        return path

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts, lists and tuples (no ``ConfigDict``), e.g. to store in a checkpoint."""
        return to_plain(self._cfg_dict)

    def flatten(self) -> dict[str, Any]:
        """Dotted keys to leaf values: ``{'optimizer.lr': 0.05, 'data.train.pipeline.0.type': ...}``."""
        return flatten(self._cfg_dict)

    def check_required(self, *keys: str) -> None:
        """Raise ``ConfigError`` listing every key (dotted paths allowed) the config lacks."""
        missing = [key for key in keys if not self._has_path(key)]
        if missing:
            raise ConfigError(f"{self._where()}: missing required key(s): {', '.join(missing)}. "
                              f"Add them to the config file (or its _base_ files).")

    # -- helpers ---------------------------------------------------------------------------------------
    def _has_path(self, dotted: str) -> bool:
        node: Any = self._cfg_dict
        for part in dotted.split("."):
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, (list, tuple)) and _in_range(part, len(node)):
                node = node[int(part)]
            else:
                return False
        return True

    def _where(self) -> str:
        return f"config file {self._filename}" if self._filename else "config"

    def _missing_message(self, key: str) -> str:
        return f"{self._where()} has no top-level key '{key}'.{missing_key_hint(key, self._cfg_dict.keys())}"


def load_config(cfg: "Config | Mapping[str, Any] | str | os.PathLike", cfg_options: CfgOptions = None) -> Config:
    """The one way to get a validated ``Config``: from a ``.py`` file (``Config.fromfile``), a dict or a
    ``Config``; ``cfg_options`` applied; ``custom_imports`` imported and top-level keys checked in every case
    (a dict never went through ``fromfile``)."""
    if isinstance(cfg, (str, os.PathLike)):
        return Config.fromfile(cfg, cfg_options=cfg_options)
    if not isinstance(cfg, Config):
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"a config must be a Config, a dict or a path to a .py config file, got "
                              f"{type(cfg).__name__}")
        cfg = Config(strip_delete_keys(dict(cfg)))
        declared = cfg.get("custom_keys") or []
        check_top_level_keys(list(cfg.keys()), None, set([declared] if isinstance(declared, str) else declared))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if "custom_imports" in cfg:  # importing twice is free; a dict or a Config() has not been through fromfile
        _import_custom_modules(cfg["custom_imports"], cfg.filename)
    return cfg


def _in_range(part: str, length: int) -> bool:
    return part.lstrip("-").isdigit() and -length <= int(part) < length


def _restore(cfg_dict: Mapping[str, Any], filename: str | None, text: str) -> Config:
    """Rebuild a Config (module-level so pickle can find it)."""
    cfg = Config.__new__(Config)
    object.__setattr__(cfg, "_cfg_dict", ConfigDict(cfg_dict))
    object.__setattr__(cfg, "_filename", filename)
    object.__setattr__(cfg, "_text", text)
    return cfg

"""Experiment configuration: Python config files with ``_base_`` inheritance, ``_delete_``, strict dotted
overrides, ``custom_imports``, attribute access, and a round-trippable dump.

Loading a config file executes it as Python: only load files you trust.
"""
from .config import Config, load_config
from .configdict import ConfigDict, ConfigError
from .formatting import flatten, format_config
from .loader import KNOWN_TOP_LEVEL_KEYS, check_top_level_keys
from .overrides import check_compatible, parse_cfg_options

__all__ = [
    "Config", "ConfigDict", "ConfigError", "KNOWN_TOP_LEVEL_KEYS", "parse_cfg_options", "check_compatible",
    "check_top_level_keys", "flatten", "format_config", "load_config",
]

"""Reading config files: execute the Python file, resolve ``_base_`` inheritance and ``_delete_``,
check top-level keys, and import ``custom_imports``.

A config file is ordinary Python and runs with full privileges: load only files you trust.
"""
from __future__ import annotations

import importlib
import inspect
import logging
import os
import re
import sys
import traceback
from typing import Any

from .configdict import ConfigError, close_matches

logger = logging.getLogger("antgo.config")

BASE_KEY = "_base_"
DELETE_KEY = "_delete_"

#: Top-level keys the framework reads (plus common mmcv/mmengine names). A key that is not listed but is a
#: close match of one of these is treated as a typo; any other unknown key is allowed (user variables).
KNOWN_TOP_LEVEL_KEYS: frozenset[str] = frozenset({
    # from the design document and the engine
    "optimizer", "optimizer_config", "lr_config", "momentum_config", "log_config", "model", "checkpoint_config",
    "data", "evaluation", "export", "parity", "max_epochs", "seed", "deterministic", "custom_hooks",
    "custom_imports", "work_dir", "load_from", "resume_from", "amp", "channels_last", "device",
    "cudnn_benchmark", "device_prefetch", "runner", "dist_params", "log_level", "find_unused_parameters",
    "train_cfg", "test_cfg", "mlflow", "prefect", "checkpoint", "multiprocessing_context", "class_names", BASE_KEY,
    # common in mmcv / mmengine style configs
    "val_cfg", "workflow", "gpu_ids", "total_epochs", "max_iters", "auto_scale_lr", "default_scope",
    "default_hooks", "env_cfg", "launcher", "resume", "opencv_num_threads", "mp_start_method",
    "dataset_type", "data_root", "img_norm_cfg", "norm_cfg", "train_pipeline", "test_pipeline",
    "val_pipeline", "num_classes", "classes", "experiment_name", "tracking", "grad_clip", "custom_keys",
    # OpenMMLab (mmdet / mmseg / mmpretrain / mmengine) configs and their test fixtures
    "pipeline", "tta_pipeline", "tta_model", "class_name", "checkpoint_file",
    "train_dataloader", "val_dataloader", "test_dataloader", "val_evaluator", "test_evaluator", "optim_wrapper",
    "param_scheduler", "visualizer", "vis_backends", "log_processor", "randomness", "backend_args", "metainfo",
    "data_preprocessor", "model_wrapper_cfg", "file_client_args", "dataset",
    "train_dataset", "val_dataset", "test_dataset", "evaluator", "albu_train_transforms", "batch_size",
    "num_workers", "persistent_workers",
})

#: Predefined variables substituted in a config file's text before it runs, as mmengine does.
PREDEFINED_VARIABLES = ("fileDirname", "fileBasename", "fileBasenameNoExtension", "fileExtname")
_PLACEHOLDER_RE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_ENV_RE = re.compile(r"[\'\"]?\$(\w+)\s*(?::\s*(\S*?))?\s*[\'\"]?")  # {{ $NAME:default }}, quotes allowed

TOP_LEVEL_TYPO_CUTOFF = 0.8


def _rel(path: str) -> str:
    """A short path for messages (relative when under the working directory)."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return path
    return path if rel.startswith("..") else rel


def _line_in_file(exc: BaseException, path: str) -> int | None:
    """The line of ``path`` where ``exc`` was raised (the innermost frame in that file)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == path]
    return frames[-1].lineno if frames else None


def _compile(source: str, path: str) -> Any:
    try:
        return compile(source, path, "exec")
    except SyntaxError as exc:
        text = f"\n    {exc.text.rstrip()}" if exc.text else ""
        raise ConfigError(f"config file {path}, line {exc.lineno}: syntax error: {exc.msg}.{text}\n"
                          f"Fix the Python syntax of that line (a config file is Python).") from exc


def substitute_predefined(source: str, path: str) -> str:
    """Replace ``{{ fileDirname }}``, ``{{ fileBasename }}``, ``{{ fileBasenameNoExtension }}`` and
    ``{{ fileExtname }}`` with this file's values and ``{{ $NAME:default }}`` with the environment variable
    ``NAME`` (else ``default``), as mmengine does; any other ``{{ ... }}`` is an error, so a placeholder never
    survives silently as a literal string."""
    basename = os.path.basename(path)
    values = {"fileDirname": os.path.dirname(path), "fileBasename": basename,
              "fileBasenameNoExtension": os.path.splitext(basename)[0], "fileExtname": os.path.splitext(path)[1]}

    def replace(match: re.Match) -> str:
        name = match.group(1)
        line = source.count("\n", 0, match.start()) + 1
        if name in values:
            return values[name].replace("\\", "/")
        env = _ENV_RE.fullmatch(name)
        if env:
            return _env_value(env.group(1), env.group(2), f"config file {path}, line {line}")
        raise ConfigError(f"config file {path}, line {line}: placeholder '{match.group(0)}' is not supported; "
                          f"the predefined variables are {', '.join('{{ %s }}' % v for v in PREDEFINED_VARIABLES)} "
                          f"and environment variables as {{{{ $NAME:default }}}}. "
                          f"Write the value itself (for a base file's value, import it with _base_ and "
                          f"override only what changes).")

    return _PLACEHOLDER_RE.sub(replace, source)


def _env_value(name: str, default: str | None, where: str) -> str:
    value = os.environ.get(name, default or None)
    if value is None:
        raise ConfigError(f"{where}: environment variable {name} is not set and '{{{{ ${name} }}}}' has no default; "
                          f"export {name}=... or write '{{{{ ${name}:default }}}}'")
    return value


def _execute(path: str) -> dict[str, Any]:
    """Run one config file in a fresh namespace; return its public variables (plus ``_base_``)."""
    with open(path, encoding="utf-8") as f:
        source = f.read()
    code = _compile(substitute_predefined(source, path), path)
    namespace: dict[str, Any] = {"__file__": path, "__name__": "__antgo_config__"}
    try:
        exec(code, namespace)  # noqa: S102 -- configs are trusted Python files by design
    except Exception as exc:
        line = _line_in_file(exc, path)
        where = f", line {line}" if line else ""
        raise ConfigError(f"config file {path}{where}: executing it raised {type(exc).__name__}: {exc}") from exc
    return {k: v for k, v in namespace.items() if _is_config_variable(k, v)}


def _is_config_variable(name: str, value: Any) -> bool:
    """Public names only; imported modules, functions and classes are helpers, not settings."""
    if name.startswith("_") and name != BASE_KEY:
        return False
    return not (inspect.ismodule(value) or inspect.isclass(value) or inspect.isroutine(value))


def _declared_keys(variables: dict[str, Any], where: str) -> set[str]:
    declared = variables.get("custom_keys", [])
    declared = [declared] if isinstance(declared, str) else declared
    if not isinstance(declared, (list, tuple)) or not all(isinstance(k, str) for k in declared):
        raise ConfigError(f"{where}: custom_keys must be a list of top-level key names, got {declared!r}")
    return set(declared)


def check_top_level_keys(keys: list[str], path: str | None, declared: set[str] | frozenset[str] = frozenset()
                         ) -> None:
    """Raise on a key that looks like a misspelled known key; log other unknown keys at DEBUG.

    ``declared`` (the config's ``custom_keys``) are the user's own keys: accepted and kept as they are."""
    where = f"config file {path}" if path else "config"
    for key in keys:
        if key in KNOWN_TOP_LEVEL_KEYS or key in declared:
            continue
        close = close_matches(key, sorted(KNOWN_TOP_LEVEL_KEYS - {BASE_KEY}), cutoff=TOP_LEVEL_TYPO_CUTOFF)
        if close:
            raise ConfigError(f"{where}: unknown top-level key '{key}'; did you mean '{close[0]}'? "
                              f"Rename it; if it is your own setting, keep it and declare it in the same file: "
                              f"custom_keys = ['{key}'] (a name starting with '_' is a helper variable and is "
                              f"left out of the config).")
        logger.debug("%s: top-level key '%s' is not a framework key; kept as a user variable", where, key)


def _base_paths(value: Any, path: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"config file {path}: _base_ must be a path or a list of paths, got {value!r}")
    folder = os.path.dirname(path)
    resolved = []
    for entry in value:
        base = os.path.abspath(os.path.join(folder, os.path.expanduser(entry)))
        if not os.path.isfile(base):
            raise ConfigError(f"config file {path}: _base_ entry '{entry}' resolves to {base}, which does not "
                              f"exist. Base paths are relative to the folder of the file that names them.")
        resolved.append(base)
    return resolved


def merge_dicts(base: dict, override: dict) -> dict:
    """``override`` merged into a copy of ``base``: dicts merge recursively, anything else replaces.

    A dict in ``override`` holding ``_delete_=True`` replaces the base dict instead of merging into it.
    """
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict):
            value = dict(value)
            replace = bool(value.pop(DELETE_KEY, False))
            if not replace and isinstance(merged.get(key), dict):
                value = merge_dicts(merged[key], value)
        merged[key] = value
    return merged


def strip_delete_keys(value: Any) -> Any:
    """Drop every ``_delete_`` left over (e.g. in a file without bases, or inside lists)."""
    if isinstance(value, dict):
        return {k: strip_delete_keys(v) for k, v in value.items() if k != DELETE_KEY}
    if isinstance(value, list):
        return [strip_delete_keys(v) for v in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(strip_delete_keys(v) for v in value)
    return value


def load_file(path: str, chain: tuple[str, ...] = ()) -> tuple[dict[str, Any], list[str]]:
    """Load ``path`` with its bases. Returns the merged variables and the texts of the files read
    (bases first), so ``Config.text`` can show everything that went into the config."""
    path = os.path.abspath(path)
    if path in chain:
        cycle = " -> ".join(_rel(p) for p in (*chain, path))
        raise ConfigError(f"cyclic _base_ inheritance: {cycle}. Remove one of these _base_ entries.")
    variables = _execute(path)
    where = f"config file {path}"
    check_top_level_keys([k for k in variables if k != BASE_KEY], path, _declared_keys(variables, where))
    merged: dict[str, Any] = {}
    texts: list[str] = []
    for base in _base_paths(variables.pop(BASE_KEY, []), path):
        base_vars, base_texts = load_file(base, (*chain, path))
        merged = merge_dicts(merged, base_vars)
        texts.extend(t for t in base_texts if t not in texts)
    with open(path, encoding="utf-8") as f:
        texts.append(f"# {path}\n{f.read()}")
    return merge_dicts(merged, variables), texts


def import_custom_modules(custom_imports: Any, path: str | None) -> None:
    """Import the modules named in ``custom_imports = dict(imports=[...], allow_failed_imports=False)``,
    so the classes they register are in the registries before anything is built."""
    where = f"config file {path}" if path else "config"
    if not isinstance(custom_imports, dict) or "imports" not in custom_imports:
        raise ConfigError(f"{where}: custom_imports must be dict(imports=['pkg.module', ...]), "
                          f"got {custom_imports!r}")
    modules = custom_imports["imports"]
    modules = [modules] if isinstance(modules, str) else modules
    if not isinstance(modules, (list, tuple)) or not all(isinstance(m, str) for m in modules):
        raise ConfigError(f"{where}: custom_imports.imports must be a module name or a list of them, "
                          f"got {modules!r}")
    allow_failed = bool(custom_imports.get("allow_failed_imports", False))
    folders = _plugin_folders(path)
    for name in modules:
        _import_one(name, where, allow_failed, folders)


def _plugin_folders(path: str | None) -> list[str]:
    """The config's folder and the working folder, appended to ``sys.path`` (after installed packages): plugin
    modules beside the config import the same way under ``python -m antgo``, the flow script and its workers."""
    folders = list(dict.fromkeys(os.path.abspath(p) for p in ([os.path.dirname(path)] if path else []) + ["."]))
    present = {os.path.abspath(p or ".") for p in sys.path}
    sys.path.extend(f for f in folders if f not in present)
    return folders


def _import_one(name: str, where: str, allow_failed: bool, folders: list[str]) -> None:
    try:
        importlib.import_module(name)
    except ImportError as exc:
        message = (f"{where}: custom_imports could not import '{name}' ({exc}); looked on sys.path, including "
                   f"{' and '.join(folders)}. Install the package or put the folder that contains it on "
                   f"PYTHONPATH (PYTHONPATH=/path/to/parent ...).")
        if allow_failed:
            logger.warning("%s (skipped: allow_failed_imports=True)", message)
            return
        raise ConfigError(message) from exc
    except Exception as exc:
        raise ConfigError(f"{where}: importing '{name}' (listed in custom_imports) raised "
                          f"{type(exc).__name__}: {exc}") from exc
    logger.debug("%s: imported custom module '%s'", where, name)

"""Mask configuration values whose key names a secret (tokens, passwords, keys, credentials).

The resolved config travels to MLflow params, the dumped ``config.py`` artifact and checkpoint metadata;
values under such keys are replaced by :data:`MASK` in all three, so a secret never leaves the process that
read it. Supply real secrets through the environment.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "******"

# A key is secret when one of its words (split on '_', '-', '.' and case changes) is one of these.
_SECRET_WORDS = ("token", "password", "passwd", "pwd", "secret", "credential", "credentials", "apikey",
                 "api_key", "private_key", "access_key", "auth", "passphrase")
_SECRET_RE = re.compile(r"(^|[_\-.])(" + "|".join(re.escape(w) for w in _SECRET_WORDS) + r")($|[_\-.])",
                        re.IGNORECASE)


def _normalise(key: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).lower()


def is_secret_key(key: str) -> bool:
    """True for ``api_token``, ``aws_secret_access_key``, ``password``, ``mlflow.auth_token``, ``apiKey``..."""
    return bool(_SECRET_RE.search(_normalise(str(key).rsplit(".", 1)[-1])))


def mask_secrets(value: Any) -> Any:
    """A copy of ``value`` (nested dicts/lists, or a flat dict of dotted keys) with secret values masked."""
    if isinstance(value, Mapping):
        return {k: (MASK if is_secret_key(k) and v not in (None, "") and not isinstance(v, Mapping)
                    else mask_secrets(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    if isinstance(value, tuple):
        return tuple(mask_secrets(v) for v in value)
    return value

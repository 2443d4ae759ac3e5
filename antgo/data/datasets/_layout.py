"""Errors shared by the file-tree readers: what is missing, the expected layout, how to get data."""
from __future__ import annotations

from collections.abc import Sequence


def layout_error(reader: str, what: str, layout: str, hint: str) -> FileNotFoundError:
    """``FileNotFoundError`` naming the missing piece, printing the expected layout and how to get data."""
    return FileNotFoundError(f"{reader}: {what}.\nExpected layout:\n{layout}\n{hint}")


def check_split(reader: str, split: str, allowed: Sequence[str]) -> str:
    """``split`` when it is one of ``allowed``, else ``ValueError`` listing them."""
    if split not in allowed:
        raise ValueError(f"{reader}: train_or_test must be one of {tuple(allowed)}, got {split!r}")
    return split


def check_flag(reader: str, ext_params: dict, key: str, default: bool) -> bool:
    """A boolean ``ext_params`` entry (a string such as "False" would otherwise count as True)."""
    value = ext_params.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{reader}: ext_params.{key} must be True or False, got {value!r}")
    return value

"""The dataset base class: a subclass says how many samples it has and how to read one.

Also the checks of a folder layout a data set plugin shares: :func:`split_names` (a split file's names, each
an image that exists) and :func:`read_class_names` (a class-names file, agreeing with the config's classes).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from antgo.console import log_once

logger = logging.getLogger(__name__)


class Dataset:
    """Base class of every antgo dataset.

    Subclasses implement the ``size`` property and ``sample(id) -> dict``. A sample is a dict; by
    convention ``image`` is an RGB ``uint8`` array ``(H, W, 3)``, ``segments`` a ``uint8`` class-index
    mask ``(H, W)`` with 255 = void, and ``image_meta`` a dict (``id``, ``image_file``, ``image_shape``).
    Optional: ``image_files(id) -> list[Path]``, the image/mask files ``sample(id)`` decodes; with it the
    Trainer checks every file for truncation before the first epoch (``antgo.engine.loading.preflight_images``).
    """

    def __init__(self, train_or_test: str = "train", dir: str | None = None,
                 ext_params: dict[str, Any] | None = None) -> None:
        self.train_or_test = train_or_test
        self.dir = dir
        # Copy so that a config dict shared between datasets is never modified through us.
        self.ext_params: dict[str, Any] = dict(ext_params) if ext_params is not None else {}

    @property
    def size(self) -> int:
        """Number of samples."""
        raise NotImplementedError(f"{type(self).__name__} must implement the 'size' property")

    def sample(self, id: int) -> dict[str, Any]:
        """The sample with index ``id`` as a dict."""
        raise NotImplementedError(f"{type(self).__name__} must implement sample(id) -> dict")

    def __len__(self) -> int:
        return int(self.size)

    def __repr__(self) -> str:
        try:
            size: object = self.size
        except Exception:  # repr must work on half-built or abstract datasets (e.g. in error messages)
            size = "?"
        return f"{type(self).__name__}(train_or_test={self.train_or_test!r}, dir={self.dir!r}, size={size})"


def split_names(split_file: str | Path, images: Mapping[str, Any]) -> list[str]:
    """The sample names of one split: the lines of ``split_file`` (``<dir>/splits/train.txt``), each a key of
    ``images`` (an image name without its extension); without a splits folder, every image, sorted.

    A splits folder without this split's file is an error (a missing val.txt would otherwise validate on
    every image, the train images included), so is a name that is not an image."""
    split_file = Path(split_file)
    if not split_file.parent.is_dir():
        return sorted(images)
    if not split_file.is_file():
        present = sorted(p.name for p in split_file.parent.glob("*.txt"))
        raise FileNotFoundError(f"split file {split_file} does not exist, but {split_file.parent} has "
                                f"{present or 'no split files'}; add {split_file.name} (one image name per line), "
                                f"or remove the folder {split_file.parent} to use every image in every split")
    names = list(dict.fromkeys(n.strip() for n in split_file.read_text().splitlines() if n.strip()))
    missing = [n for n in names if n not in images]
    if missing:
        with_suffix = [n for n in missing if Path(n).stem in images]
        hint = (f"; list names without the extension ({Path(with_suffix[0]).stem!r}, not {with_suffix[0]!r})"
                if with_suffix else "")
        raise FileNotFoundError(f"{split_file} names {len(missing)} images that are not in the image folder: "
                                f"{missing[:5]}{hint}")
    return names


def read_class_names(path: str | Path, configured: Sequence[str] | None = None) -> tuple[str, ...] | None:
    """The class names: ``configured`` (the config's list) if given, else the lines of ``path`` (optional file);
    None when neither is there. A file listing another number of classes than the config is an error."""
    path = Path(path)
    listed = tuple(n.strip() for n in path.read_text().splitlines() if n.strip()) if path.is_file() else None
    if configured is None:
        return listed
    configured = tuple(configured)
    if listed is not None and len(listed) != len(configured):
        raise ValueError(f"{path} lists {len(listed)} classes {list(listed)} but the config has {len(configured)} "
                         f"{list(configured)}; make them agree (the config's classes set the model's outputs)")
    if listed is not None and listed != configured:
        log_once(logger, logging.WARNING, "%s lists the classes %s, the config %s: the config's names are used",
                 path, list(listed), list(configured))
    return configured

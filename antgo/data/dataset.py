"""The dataset base class: a subclass says how many samples it has and how to read one."""
from __future__ import annotations

from typing import Any


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

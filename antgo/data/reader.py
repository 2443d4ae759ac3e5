"""``register`` (dataset classes into ``DATASETS``) and ``Reader`` (sample -> pipeline -> fields)."""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch.utils.data

from antgo.registry import DATASETS
from antgo.data.cache import SampleCache
from antgo.data.transforms.compose import Compose, reraise_with_context

logger = logging.getLogger(__name__)

# What counts as a bad sample under skip_bad_samples: unreadable, missing or inconsistent data. Other
# exceptions (TypeError, KeyError, ...) are bugs in code and always propagate.
BAD_SAMPLE_ERRORS = (OSError, ValueError)
MAX_SUBSTITUTES = 16  # a bad sample is replaced by the next good one, looking at most this far


def register(cls: type | None = None, *, name: str | None = None) -> Any:
    """Register a dataset class in ``DATASETS`` under its class name and return it unchanged.

    Usable as ``@reader.register`` or ``@reader.register(name='Other')``.
    """
    def _do(c: type) -> type:
        if not isinstance(c, type):
            raise TypeError(f"register expects a class, got {type(c).__name__}")
        return DATASETS.register_module(name=name, module=c)

    return _do if cls is None else _do(cls)


class MissingFieldError(KeyError):
    """An ``inputs_def`` field that the sample does not have after the pipeline."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class Reader(torch.utils.data.Dataset):
    """A torch Dataset over an antgo ``Dataset``: ``dataset.sample(i)`` -> pipeline -> ``inputs_def`` fields.

    ``pipeline``: a list of transform configs (built with ``TRANSFORMS``) or callables.
    ``inputs_def``: ``dict(fields=[...])`` (optional ``alias=[...]`` renames them in order); None keeps
    every key. Errors are raised with the dataset class, the index and the failing transform named.
    ``skip_bad_samples``: a sample whose reading or transforms raise ``OSError``/``ValueError`` (missing,
    truncated or corrupt files) is logged, counted (``num_skipped``, ``skipped_indices``, shared by the
    DataLoader workers) and replaced by the next good one. ``cache``: keep decoded samples
    (``dataset.sample`` output) in a cache shared by the workers (see ``antgo.data.cache``).
    ``collate_fn``: the collate function the loader should use for these samples (None: the default).
    """

    def __init__(self, dataset: Any, pipeline: Sequence[Mapping[str, Any] | Callable] | None = None,
                 inputs_def: Mapping[str, Any] | None = None, key_path: str = "pipeline",
                 skip_bad_samples: bool = False, cache: bool | str | None = None,
                 collate_fn: Callable | None = None) -> None:
        if not hasattr(dataset, "sample"):
            raise TypeError(f"Reader needs an object with sample(id) and size, got {type(dataset).__name__}")
        if not isinstance(skip_bad_samples, bool):
            raise ValueError(f"skip_bad_samples must be True or False, got {skip_bad_samples!r}")
        self.dataset = dataset
        self.pipeline = Compose(pipeline, key_path=key_path)
        self.fields, self.alias = self._parse_inputs_def(inputs_def)
        self.collate_fn = collate_fn  # None: build_dataloader's default collate
        self.cache = SampleCache.create(cache, dataset)
        # one byte per sample in shared memory: DataLoader workers mark what they skipped, the caller reads it
        self._bad = torch.zeros(len(self), dtype=torch.uint8).share_memory_() if skip_bad_samples else None

    @property
    def skip_bad_samples(self) -> bool:
        return self._bad is not None

    def mark_bad(self, indices: Sequence[int]) -> None:
        """Skip these samples from now on (found bad before loading, e.g. by the pre-flight check)."""
        if self._bad is None:
            raise ValueError("mark_bad needs skip_bad_samples=True")
        for i in indices:
            self._bad[int(i)] = 1

    @staticmethod
    def _parse_inputs_def(inputs_def: Mapping[str, Any] | None) -> tuple[list[str] | None, list[str] | None]:
        if inputs_def is None:
            return None, None
        if not isinstance(inputs_def, Mapping) or "fields" not in inputs_def:
            raise ValueError(f"inputs_def must be a dict with a 'fields' list, got {inputs_def!r}")
        fields = inputs_def["fields"]
        if isinstance(fields, str) or not all(isinstance(f, str) for f in fields):
            raise ValueError(f"inputs_def.fields must be a list of field names, got {fields!r}")
        alias = inputs_def.get("alias")
        if alias is not None and len(alias) != len(fields):
            raise ValueError(f"inputs_def.alias {list(alias)} must have one name per field {list(fields)}")
        return list(fields), (list(alias) if alias is not None else None)

    def __len__(self) -> int:
        return len(self.dataset) if hasattr(self.dataset, "__len__") else int(self.dataset.size)

    def _context(self, index: int) -> str:
        chain = " -> ".join(self.pipeline.names) or "(no transforms)"
        return f"{type(self.dataset).__name__} sample {index} (pipeline: {chain})"

    @property
    def skipped_indices(self) -> list[int]:
        """Indices skipped as bad so far (in any DataLoader worker); empty unless ``skip_bad_samples``."""
        return [] if self._bad is None else torch.nonzero(self._bad).flatten().tolist()

    @property
    def num_skipped(self) -> int:
        """How many samples were skipped as bad so far (each bad sample counts once)."""
        return 0 if self._bad is None else int(self._bad.sum())

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if self._bad is None:
            return self._load(index)
        return self._load_skipping_bad(index)

    def _load_skipping_bad(self, index: int) -> dict[str, Any]:
        """The sample at ``index``, or the next good one; a bad sample is read once, never retried."""
        n, failed = len(self), []
        tries = min(MAX_SUBSTITUTES, n)
        for k in range(tries):
            i = (index + k) % n
            if self._bad[i]:
                continue
            try:
                return self._load(i)
            except BAD_SAMPLE_ERRORS as exc:
                self._bad[i] = 1
                failed.append(i)
                logger.warning("skip_bad_samples: skipping sample %d (%d skipped so far): %s", i, self.num_skipped, exc)
        raise RuntimeError(
            f"{type(self.dataset).__name__}: no good sample among the {tries} indices from {index} on (wrapping "
            f"at {n}; skip_bad_samples looks at most {MAX_SUBSTITUTES} ahead; {self.num_skipped} bad in total, "
            f"failed now: {failed}); the data set looks broken: check the files named in the warnings above")

    def _read(self, index: int) -> Any:
        if self.cache is not None:
            return self.cache.get(index, self.dataset.sample)
        return self.dataset.sample(index)

    def _load(self, index: int) -> dict[str, Any]:
        try:
            sample = self._read(index)
        except Exception as exc:
            reraise_with_context(exc, f"{type(self.dataset).__name__}.sample({index}) failed")
        if not isinstance(sample, dict):
            raise TypeError(f"{type(self.dataset).__name__}.sample({index}) returned {type(sample).__name__}, expected a dict")
        sample = dict(sample)  # transforms write into the dict; keep the dataset's own object untouched
        try:
            sample = self.pipeline(sample)
        except Exception as exc:
            reraise_with_context(exc, self._context(index))
        if self.fields is None:
            return sample
        missing = [f for f in self.fields if f not in sample]
        if missing:
            raise MissingFieldError(
                f"{self._context(index)}: inputs_def.fields {missing} missing from the sample; "
                f"available keys: {sorted(sample)}")
        names = self.alias or self.fields
        return {name: sample[f] for name, f in zip(names, self.fields)}

    def __repr__(self) -> str:
        return f"Reader({self.dataset!r}, {self.pipeline!r}, fields={self.fields})"

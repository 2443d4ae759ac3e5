"""Build a ``Reader`` from a dataset config and a ``DataLoader`` from a Reader."""
from __future__ import annotations

import functools
import inspect
import logging
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from antgo.console import log_once
from antgo.registry import DATASETS, close_names
from antgo.data.collate import collate
from antgo.data.reader import Reader

logger = logging.getLogger(__name__)

# Keys of a split config that configure the Reader rather than the dataset class (device_augmentation is
# read by antgo.data.device_pipeline.split_for_device).
_READER_KEYS = ("pipeline", "inputs_def", "skip_bad_samples", "cache", "collate_fn", "device_augmentation",
                "preflight")  # preflight: read by the Trainer (antgo.engine.loading.preflight_images)


def build_dataset(cfg: Mapping[str, Any], key_path: str = "data.train") -> Reader:
    """Build ``Reader(DATASETS.build(cfg minus pipeline/inputs_def), pipeline, inputs_def)``.

    ``cfg`` is e.g. the seed's ``data.train`` dict: ``type``, ``train_or_test``, ``dir``, ``ext_params``,
    ``pipeline``, ``inputs_def``; other keys are forwarded to the dataset class. ``cfg`` is not modified.
    """
    if not isinstance(cfg, Mapping):
        raise TypeError(f"{key_path} must be a dict with a 'type' key, got {type(cfg).__name__}")
    dataset_cfg = {k: v for k, v in cfg.items() if k not in _READER_KEYS}
    try:
        dataset = DATASETS.build(dataset_cfg, key_path=key_path)  # deep-copies its arguments
    except (OSError, ValueError, NotImplementedError) as exc:  # the dataset's own checks: name the config key
        exc.add_note(f"while building {key_path} (type={cfg.get('type')!r}, dir={cfg.get('dir')!r}); "
                     f"fix the config or override it, e.g. --cfg-options {key_path}.dir=/path/to/data")
        raise
    reader = Reader(dataset, pipeline=cfg.get("pipeline"), inputs_def=cfg.get("inputs_def"),
                    key_path=f"{key_path}.pipeline", skip_bad_samples=cfg.get("skip_bad_samples", False),
                    cache=cfg.get("cache"), collate_fn=cfg.get("collate_fn"))
    log_once(logger, logging.INFO, "%s: %s, %d samples, pipeline %s", key_path, type(dataset).__name__,
             len(reader), " -> ".join(reader.pipeline.names) or "(none)")  # each stage rebuilds its splits
    return reader


def seed_worker(worker_id: int, base_seed: int = 0) -> None:
    """Seed numpy and random in a DataLoader worker from the seed torch gave the worker.

    torch seeds each worker with ``loader_base_seed + worker_id``, where ``loader_base_seed`` is drawn from
    the loader's generator (seeded with ``base_seed``) every time workers start. Transforms draw from the
    global ``np.random``/``random`` state, so augmentation is reproducible for a given seed and number of
    workers, and it differs between epochs also when the workers are restarted every epoch.
    """
    seed = torch.initial_seed() % (2 ** 32)
    np.random.seed(seed)
    random.seed(seed)


def _loader_params() -> set[str]:
    return set(inspect.signature(DataLoader.__init__).parameters) - {"self", "dataset"}


def check_loader_keys(cfg: Mapping[str, Any], key_path: str = "build_dataloader") -> None:
    """Every key of a loader config (``data.train_dataloader``) is a :func:`build_dataloader` or torch
    ``DataLoader`` argument; a typo is a TypeError naming ``key_path.key``, the close key and the known ones."""
    own = [name for name in inspect.signature(build_dataloader).parameters if name not in ("reader", "key_path",
                                                                                           "kwargs")]
    torch_args = sorted(_loader_params() - set(own))
    unknown = [key for key in cfg if key not in own and key not in torch_args]
    if not unknown:
        return
    key = unknown[0]
    close = close_names(key, own + torch_args, cutoff=0.75)  # 0.6 would also offer workers_per_gpu
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    others = f" (also unknown: {', '.join(unknown[1:])})" if len(unknown) > 1 else ""
    raise TypeError(f"{key_path}.{key} is not a data loader setting{others}.{hint} Known: {', '.join(own)}; "
                    f"torch DataLoader arguments: {', '.join(torch_args)}")


def build_dataloader(reader: Any, samples_per_gpu: int = 1, workers_per_gpu: int = 0, drop_last: bool = False,
                     shuffle: bool = False, seed: int | None = 0, persistent_workers: bool = True,
                     pin_memory: bool = False, multiprocessing_context: str | None = None,
                     prefetch_factor: int | None = 2, key_path: str = "build_dataloader",
                     **kwargs: Any) -> DataLoader:
    """A ``DataLoader`` over ``reader`` with ``collate``.

    ``workers_per_gpu=0`` loads in the main process (``persistent_workers``/``prefetch_factor`` are
    then not passed). With workers: persistent workers, per-worker seeding from ``seed + worker_id``,
    and ``multiprocessing_context`` ('fork', 'spawn', 'forkserver' or None = the platform default).
    Shuffling uses a ``torch.Generator`` seeded with ``seed``. Other keyword arguments must be
    ``DataLoader`` arguments (``sampler``, ``batch_sampler``, ``timeout``, ...); unknown keys raise TypeError
    (:func:`check_loader_keys`). ``key_path`` (``data.train_dataloader``) names the config section in errors.
    """
    check_loader_keys(kwargs, key_path)
    if int(samples_per_gpu) < 1:
        raise ValueError(f"{key_path}.samples_per_gpu must be >= 1, got {samples_per_gpu}")
    if int(workers_per_gpu) < 0:
        raise ValueError(f"{key_path}.workers_per_gpu must be >= 0, got {workers_per_gpu}")
    if multiprocessing_context not in (None, "fork", "spawn", "forkserver") and not hasattr(
            multiprocessing_context, "Process"):
        raise ValueError(f"multiprocessing_context must be 'fork', 'spawn', 'forkserver' or None, "
                         f"got {multiprocessing_context!r}")
    base_seed = 0 if seed is None else int(seed)
    generator = torch.Generator()
    generator.manual_seed(base_seed)
    args: dict[str, Any] = dict(batch_size=int(samples_per_gpu), shuffle=bool(shuffle), drop_last=bool(drop_last),
                                num_workers=int(workers_per_gpu),
                                collate_fn=getattr(reader, "collate_fn", None) or collate, pin_memory=bool(pin_memory),
                                generator=generator)
    if "sampler" in kwargs or "batch_sampler" in kwargs:
        args.pop("shuffle")  # DataLoader rejects shuffle together with a custom sampler
        if "batch_sampler" in kwargs:
            for key in ("batch_size", "drop_last"):
                args.pop(key)
    if workers_per_gpu > 0:
        args.update(persistent_workers=bool(persistent_workers),
                    worker_init_fn=functools.partial(seed_worker, base_seed=base_seed),
                    multiprocessing_context=multiprocessing_context)
        if prefetch_factor is not None:
            args["prefetch_factor"] = int(prefetch_factor)
    args.update(kwargs)
    return DataLoader(reader, **args)


class InfiniteSampler(torch.utils.data.Sampler[int]):
    """An endless index stream for iteration-based training: pass ``p`` is a permutation seeded with
    ``seed + p`` (or the identity without ``shuffle``), passes follow each other without a break.

    Under DDP the global stream is dealt round-robin: rank ``r`` takes global positions ``r, r + W, ...``, so
    the half-batches of 2 ranks at batch B/2 are exactly the batch of 1 process at batch B. ``set_start(n)``
    skips this rank's first ``n`` indices (resume at iteration ``k``: ``n = k * batch_size``); the position is
    a pure function of (seed, n), so a resumed run reads exactly the samples an uninterrupted one would.
    ``len()`` is one pass per rank (what an "epoch" means for logging).
    """

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if size < 1:
            raise ValueError("InfiniteSampler: the data set is empty")
        self.size, self.shuffle, self.seed = int(size), bool(shuffle), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.start = 0

    def set_start(self, n: int) -> None:
        self.start = int(n)

    def _order(self, p: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        generator = torch.Generator()
        generator.manual_seed(self.seed + p)
        return torch.randperm(self.size, generator=generator).tolist()

    def __iter__(self):  # type: ignore[override]
        position = self.rank + self.world_size * self.start
        current, order = -1, []
        while True:
            p, j = divmod(position, self.size)
            if p != current:
                current, order = p, self._order(p)
            yield order[j]
            position += self.world_size

    def __len__(self) -> int:
        return max(1, self.size // self.world_size)


class ShardSampler(torch.utils.data.Sampler[int]):
    """Rank ``r`` of ``W`` reads indices ``r, r + W, ...`` in order, without the padding of
    ``DistributedSampler``: every sample is evaluated exactly once over all ranks."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(int(rank), int(size), int(world_size)))

    def __iter__(self):  # type: ignore[override]
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def build_split_loader(split_cfg: Mapping[str, Any], key_path: str, device: torch.device | str,
                       check: Any = None, **loader_args: Any) -> tuple[DataLoader, Any]:
    """(DataLoader, device batch transform or None) for one split trained/evaluated on ``device``.

    ``split_for_device`` decides which transforms run batched on the device; the CPU reader builds the
    rest. ``pin_memory`` defaults to True on CUDA so that ``non_blocking`` copies really overlap. A
    ``sampler`` may be given as a callable ``f(reader) -> Sampler`` (it needs the reader's size);
    ``check(reader)`` runs before any sampler or loader exists (e.g. an empty split names its file).
    """
    from antgo.data.device_pipeline import split_for_device

    loader_key = f"{key_path}_dataloader"
    check_loader_keys(loader_args, loader_key)  # a typo fails before the data set is read
    cpu_cfg, batch_transform = split_for_device(split_cfg, device, key_path)
    reader = build_dataset(cpu_cfg, key_path)
    if check is not None:
        check(reader)
    if torch.device(device).type == "cuda":
        loader_args.setdefault("pin_memory", True)
    if callable(loader_args.get("sampler")) and not isinstance(loader_args["sampler"], torch.utils.data.Sampler):
        loader_args["sampler"] = loader_args["sampler"](reader)
    return build_dataloader(reader, key_path=loader_key, **loader_args), batch_transform

"""``Trainer``: builds data, model, optimizer and hooks from a config, and runs the epoch loop.

The loop (:meth:`Trainer._run_epoch` and :meth:`Trainer.run_step`) reads top to bottom; everything optional
is a hook, dispatched in one place (:meth:`Trainer.call_hook`) that names a failing hook. Exceptions
propagate: a failed run raises. Loss values stay on the device and reach the host once per log interval
(:class:`antgo.engine.numerics.LossMeter`); ``max_epochs`` or ``max_iters`` (an endless sampler, persistent
workers, no epoch-boundary stalls) bounds the run.
"""
from __future__ import annotations

import contextlib
import inspect
import itertools
import logging
import math
import os
import random
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from antgo.config import load_config  # noqa: F401  (the one config loader; re-exported for callers)
from antgo.engine.checkpoint import CheckpointWriteError
from antgo.engine.evaluation import amp_context, json_safe
from antgo.engine.prefetch import device_batches
from antgo.engine.hooks.base import STAGES, Hook
from antgo.engine.logging import add_file_handler, remove_handler
from antgo.engine.memory import is_out_of_memory, is_worker_death, note_out_of_memory
from antgo.engine.numerics import LossMeter, NonFiniteError, find_nonfinite_state, grads_are_finite, parse_losses

__all__ = ["Trainer", "RunFolderConflict", "load_config", "seed_everything", "parse_losses"]

logger = logging.getLogger(__name__)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; with ``deterministic`` prefer deterministic kernels (warn, not fail)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


class RunFolderConflict(FileExistsError):
    """A run refused before it wrote anything: it would replace the config file being trained, or the
    checkpoints of an earlier run in its folder. The message names the files and the fixes."""


def dumped_by_antgo(path: str) -> bool:
    """Whether ``path`` is a config file antgo wrote (``Config.dump`` output reads back to its own text): the
    flow's and a run's config.py may be updated, a hand-written config file never is."""
    from antgo.config import Config

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        return Config.fromfile(path, import_custom_modules=False).masked_text() == text
    except Exception:  # a file that does not even load again is certainly not a dump to update
        return False


# torch's messages for layers whose sizes do not fit (conv, linear, batch/layer/group norm)
_LAYER_MISMATCH = re.compile(r"to have \d+ channels|mat1 and mat2 shapes cannot be multiplied|running_mean should "
                             r"contain|normalized_shape|divisible by num_groups")
_LABEL_OUTSIDE = re.compile(r"Target -?\d+ is out of bounds")  # cross-entropy with a label >= the class count


@contextlib.contextmanager
def first_forward(where: str) -> Iterator[None]:
    """A run's first forward passes (the validation check, the first step): a torch error saying that layer
    sizes do not fit gets a note naming the config keys to check. Later iterations are not wrapped."""
    try:
        yield
    except (RuntimeError, IndexError) as exc:
        if _LAYER_MISMATCH.search(str(exc)) and not is_out_of_memory(exc):
            exc.add_note(f"in {where}: the model's layers do not fit together; check the channel settings of "
                         f"model.* (the backbone's output channels against model.neck / model.decode_head "
                         f"in_channels)")
        elif _LABEL_OUTSIDE.search(str(exc)):
            exc.add_note(f"in {where}: a label of the batch is not below the model's number of classes; set the "
                         f"head's class count (model.head.num_classes, model.decode_head.out_channels) to the data "
                         f"set's classes")
        raise


class _TrainStep(torch.nn.Module):
    """Routes DistributedDataParallel's forward to ``forward_train``, so its gradient all-reduce runs."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **batch: Any) -> Any:
        return self.model.forward_train(**batch)


def _dist_env() -> tuple[int, int, int]:
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)))


class Trainer:
    """Train a model described by a config.

    ``Trainer(cfg, work_dir, device, gpu_id, seed)``; ``config_dataloader()``; ``config_model()``;
    ``start_train(max_epochs)`` → ``dict(best_checkpoint, latest_checkpoint, best_score, best_metric,
    epochs, iters, history)``. Attributes hooks may read are listed in ``docs/architecture.md``.
    """

    def __init__(self, cfg: Any, work_dir: str = "./output", device: str | None = None, gpu_id: int | None = None,
                 seed: int | None = None) -> None:
        from antgo.engine.device import fast_path, resolve_device

        self.cfg = load_config(cfg)
        self.work_dir = os.path.abspath(work_dir)
        self.rank, self.local_rank, self.world_size = _dist_env()
        if gpu_id is None and self.world_size > 1 and torch.cuda.is_available():
            gpu_id = self.local_rank
        self.device = resolve_device(device, gpu_id)
        self._owns_process_group = self._init_distributed()
        self.seed = int(seed if seed is not None else self.cfg.get("seed", 0))
        self.cfg["seed"] = self.seed  # the dumped config.py says which seed ran (--seed included)
        self.deterministic = bool(self.cfg.get("deterministic", False))
        seed_everything(self.seed, self.deterministic)
        fast = fast_path(self.cfg, self.device, self.deterministic)  # bf16 + channels_last on CUDA by default
        self.amp, self.amp_dtype, self.channels_last = fast.amp, fast.amp_dtype, fast.channels_last
        self.prefetch = fast.prefetch
        opt_cfg = dict(self.cfg.get("optimizer_config") or {})
        grad_clip = opt_cfg.pop("grad_clip", None)
        self.skip_nonfinite = int(opt_cfg.pop("skip_nonfinite", 0) or 0)
        if opt_cfg:
            raise KeyError(f"optimizer_config has unknown keys {sorted(opt_cfg)}; supported: "
                           f"grad_clip=dict(max_norm=..., norm_type=2) or None, skip_nonfinite=N")
        self.grad_clip = dict(grad_clip) if grad_clip else None
        log_cfg = self.cfg.get("log_config") or {}
        self.log_interval = max(1, int(log_cfg.get("interval", 10)))  # loss values reach the host this often
        self.log_grad_norm = bool(log_cfg.get("grad_norm", False))
        self.meter = LossMeter(self.device)
        self.train_transform: Any = None  # device batch transforms from split_for_device
        self.val_transform: Any = None
        self._params: list[torch.nn.Parameter] = []  # the optimizer's parameters, collected once
        self._data_iter: Any = None
        self.by_epoch = True
        self.skipped_steps = 0
        self.train_loader: Any = None
        self.val_loader: Any = None
        self.model: torch.nn.Module | None = None
        self._train_step: Any = None  # model.forward_train, or the DDP wrapper around it
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: Any = None
        self.scaler: Any = None
        self.hooks: list[Any] = []
        self._stage_hooks: dict[str, list[Any]] = {s: [] for s in STAGES}
        self._resume: dict[str, Any] | None = None
        self.epoch = self.iter = self.inner_iter = self.start_epoch = 0
        self.max_epochs = self.max_iters = self.iters_per_epoch = 0
        self.log_vars: dict[str, float] = {}  # averages of the last log interval (host floats)
        self.log_ready = False  # True in after_iter right after log_vars was refreshed
        self.outputs: dict[str, torch.Tensor] = {}  # this step's loss terms, on the device (reading one syncs)
        self.best_score: float | None = None
        self.best_metric: str | None = None
        self.best_rule: str | None = None
        self.best_epoch: int | None = None
        self.best_iter: int | None = None
        self.best_metrics: dict[str, float] = {}
        self.best_checkpoint: str | None = None
        self.latest_checkpoint: str | None = None
        self.history: list[dict[str, Any]] = []
        self._epoch_sums: dict[str, float] = {}
        self._epoch_count = 0
        self._pending_val: dict[str, Any] | None = None
        self.stop_reason: str | None = None  # set by request_stop (early stopping): the loop ends after this epoch
        self.best_weights: str | None = None
        self._first_step_pending = False  # True from the start of a run until its first step has passed

    # ---------------------------------------------------------------- set-up
    def _init_distributed(self) -> bool:
        """Join the process group that torchrun describes (``WORLD_SIZE`` > 1): NCCL on CUDA, gloo on CPU."""
        import torch.distributed as dist

        if self.world_size <= 1 or dist.is_initialized():
            return False
        dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        logger.info("distributed: rank %d of %d (local rank %d) on %s", self.rank, self.world_size,
                    self.local_rank, self.device)
        return True

    def config_dataloader(self, with_validate: bool = True) -> None:
        """Build the train loader (``data.train`` + ``data.train_dataloader``) and, if asked and configured,
        the validation loader (``data.val`` + ``data.val_dataloader``, needs ``evaluation.metric``).

        With ``max_iters`` in the config the train loader reads an endless stream (``InfiniteSampler``,
        persistent workers); under DDP each rank trains on its share and validates on its shard."""
        from antgo.data.builder import ShardSampler, build_split_loader, check_loader_keys
        from antgo.engine.loading import check_class_names, check_split

        data = self.cfg.get("data")
        if not isinstance(data, Mapping) or "train" not in data:
            raise KeyError("config has no data.train; add data=dict(train=dict(type=..., ...), ...)")
        for key in ("train_dataloader", "val_dataloader", "test_dataloader"):  # a typo in test's too, not at test
            if isinstance(data.get(key), Mapping):
                check_loader_keys(data[key], f"data.{key}")
        self._build_train_loader(infinite=self.cfg.get("max_iters") is not None)
        check_class_names(self.train_loader.dataset, self.cfg, "data.train")
        self.val_loader, self.val_transform = None, None
        evaluation = self.cfg.get("evaluation")
        if not with_validate:
            return
        if data.get("val") is None or not evaluation or not evaluation.get("metric"):
            if data.get("val") is not None or evaluation:
                logger.warning("validation off: it needs both data.val and evaluation.metric")
            return
        val_args: dict[str, Any] = {"shuffle": False, "seed": self.seed + self.rank,
                                    **dict(data.get("val_dataloader") or {})}
        if self.world_size > 1:  # each rank evaluates its own samples; the metrics are all-reduced
            val_args.pop("shuffle")
            val_args["sampler"] = lambda reader: ShardSampler(len(reader), self.rank, self.world_size)
        # an empty val split would save best.pth at a score of 0; a truncated image would fail after an epoch
        self.val_loader, self.val_transform = build_split_loader(
            data["val"], "data.val", self.device, check=lambda reader: check_split(reader, data["val"], "data.val"),
            **val_args)

    def _build_train_loader(self, infinite: bool) -> None:
        from antgo.data.builder import InfiniteSampler, build_split_loader
        from antgo.engine.loading import check_split

        data = self.cfg["data"]
        args: dict[str, Any] = {"shuffle": True, "seed": self.seed + self.rank,
                                **dict(data.get("train_dataloader") or {})}
        shuffle = bool(args.pop("shuffle"))
        if infinite:
            args.pop("drop_last", None)  # an endless stream has no last batch
            args["sampler"] = lambda reader: InfiniteSampler(len(reader), shuffle, self.seed, self.rank,
                                                             self.world_size)
        elif self.world_size > 1:  # each rank reads its own 1/world_size of every epoch
            from torch.utils.data.distributed import DistributedSampler

            args["sampler"] = lambda reader: DistributedSampler(reader, self.world_size, self.rank, seed=self.seed,
                                                                shuffle=shuffle,
                                                                drop_last=bool(args.get("drop_last", False)))
        else:
            args["shuffle"] = shuffle
        self.train_loader, self.train_transform = build_split_loader(
            data["train"], "data.train", self.device,
            check=lambda reader: check_split(reader, data["train"], "data.train"), **args)
        self._data_iter = None
        if len(self.train_loader) == 0:
            raise ValueError("data.train gives no batch: the data set is smaller than samples_per_gpu with "
                             "drop_last=True; lower data.train_dataloader.samples_per_gpu")

    def config_model(self, resume_from: str | None = None, load_from: str | None = None, strict: bool = True) -> None:
        """Model → device → channels_last → optimizer → hooks → resume state (applied in ``start_train``)
        or ``load_from`` weights."""
        from antgo.engine.checkpoint import load_checkpoint
        from antgo.engine.device import make_grad_scaler
        from antgo.engine.hooks.builder import build_default_hooks
        from antgo.engine.optim import build_optimizer
        import antgo.models  # noqa: F401  (registers the built-in models)
        from antgo.models.builder import build_model

        if "model" not in self.cfg:
            raise KeyError("config has no 'model'; add model=dict(type=..., ...)")
        if "optimizer" not in self.cfg:
            raise KeyError("config has no 'optimizer'; add e.g. optimizer=dict(type='SGD', lr=0.01, momentum=0.9)")
        model = build_model(self.cfg["model"]).to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model, self._train_step = model, model.forward_train
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            self._train_step = DistributedDataParallel(
                _TrainStep(model), device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=bool(self.cfg.get("find_unused_parameters", False)))
        self.optimizer = build_optimizer(model, self.cfg["optimizer"])
        self._params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.scaler = make_grad_scaler(self.device, self.amp, self.amp_dtype)
        self.hooks, self._stage_hooks = [], {s: [] for s in STAGES}
        for hook in build_default_hooks(self):
            self.register_hook(hook)
        resume_from = resume_from or self.cfg.get("resume_from")
        load_from = load_from or self.cfg.get("load_from")
        if resume_from:
            # the optimizer/scheduler states are applied once the scheduler exists (start_train)
            self._resume = load_checkpoint(resume_from, model, map_location="cpu", strict=True)
            self._resume["path"] = resume_from
            logger.info("Resuming from %s (epoch %s)", resume_from, self._resume.get("meta", {}).get("epoch"))
        elif load_from:
            load_checkpoint(load_from, model, map_location="cpu", strict=strict)
            logger.info("Loaded weights from %s", load_from)

    def register_hook(self, hook: Hook) -> None:
        """Add a hook; hooks run by ascending ``priority``, ties in registration order."""
        self.hooks.append(hook)
        self.hooks.sort(key=lambda h: getattr(h, "priority", 50))  # stable sort keeps registration order
        for stage in STAGES:
            self._stage_hooks[stage] = [h for h in self.hooks if self._overrides(h, stage)]

    @staticmethod
    def _overrides(hook: Any, stage: str) -> bool:
        method = getattr(type(hook), stage, None)
        return method is not None and (not isinstance(hook, Hook) or method is not getattr(Hook, stage))

    def call_hook(self, stage: str, *args: Any) -> None:
        """Run ``stage`` on every hook; a failure is logged and re-raised with the hook named in a note."""
        for hook in self._stage_hooks[stage]:
            try:
                getattr(hook, stage)(self, *args)
            except Exception as exc:
                where = f"in hook {type(hook).__name__}.{stage} (epoch {self.epoch + 1}, iter {self.iter})"
                logger.error("%s: %s: %s", where, type(exc).__name__, exc)
                exc.add_note(where)
                raise

    def dispatch_val(self, metrics: dict[str, float]) -> None:
        """Record validation metrics for the history and call ``after_val`` on every hook."""
        record = json_safe(metrics)  # NaN (absent class) -> None: the history is JSON
        if self.by_epoch and self.history and self.history[-1]["epoch"] == self.epoch + 1:
            self.history[-1]["val"] = record
        else:  # iteration mode: joins the history entry of the running pass when it closes
            self._pending_val = record
        self.call_hook("after_val", metrics)

    def request_stop(self, reason: str) -> None:
        """End training after the current epoch (its checkpoint hooks still run: it is saved as the last one)."""
        self.stop_reason = reason

    def resolve_out_dir(self, out_dir: str | None) -> str:
        """``None`` → ``work_dir``; a relative path → under ``work_dir`` (the rule ``find_checkpoint`` reads by)."""
        from antgo.engine.loading import resolve_out_dir

        return resolve_out_dir(self.work_dir, out_dir)

    def _check_run_folder(self) -> None:
        """Refuse, before anything is written, a run that would replace what it must not: the config file being
        trained (``config.py`` of its own folder), or an earlier run's checkpoints (a fresh run, not a resume)."""
        target = os.path.join(self.work_dir, "config.py")
        source = self.cfg.filename
        if source and os.path.isfile(target) and os.path.samefile(source, target) and not dumped_by_antgo(target):
            raise RunFolderConflict(
                f"{source} is the config file being trained, and --work-dir {self.work_dir} is its folder: the run "
                f"would replace it with the dumped config.py. Train into another --work-dir (e.g. --work-dir "
                f"work_dirs/{os.path.splitext(os.path.basename(source))[0]}), or, to go on in this folder, train "
                f"a copy of the file kept outside it; your file stays as it is")
        continuing = self._resume is not None or self.latest_checkpoint is not None or (
            self.model is None and bool(self.cfg.get("resume_from")))
        if not continuing:
            self._refuse_an_earlier_run()

    def _refuse_an_earlier_run(self) -> None:
        from antgo.engine.checkpoint import describe_run_checkpoints
        from antgo.engine.loading import checkpoint_folders

        for folder in checkpoint_folders(self.cfg, self.work_dir):
            found = describe_run_checkpoints(folder)
            if not found:
                continue
            latest = os.path.join(folder, "latest.pth")
            resume = f"--resume-from {latest}" if os.path.isfile(latest) else "--resume-from one of them"
            raise RunFolderConflict(
                f"{folder} holds the checkpoints of an earlier run: {found}. A new run (not a resume; one from "
                f"--load-from weights too) would replace them and mix two runs in one folder. Continue that run "
                f"with {resume} (Trainer: config_model(resume_from=...)), train into another --work-dir, or delete "
                f"{folder} if that run is not needed")

    def save_checkpoint(self, path: str) -> str:
        """Full state: weights, optimizer, scheduler, scaler, counters, best score, history, RNG states.

        Refuses (``NonFiniteError``, nothing written) when a loss term since the last check or any weight or
        buffer is NaN/Inf: ``latest.pth``/``best.pth`` keep the last good state."""
        from antgo.engine.checkpoint import save_checkpoint
        from antgo.engine.loading import run_relative

        self.check_finite(f"saving {path}")

        hook_states = {type(h).__name__: h.state_dict() for h in self.hooks if callable(getattr(h, "state_dict", None))}
        meta = dict(epoch=self.epoch + 1, iter=self.iter, seed=self.seed, best_score=self.best_score,
                    best_metric=self.best_metric, best_rule=self.best_rule, best_epoch=self.best_epoch,
                    best_iter=self.best_iter, best_metrics=self.best_metrics,
                    # run-folder-relative paths: a copied or moved folder resumes with its own files
                    best_checkpoint=run_relative(self.best_checkpoint, self.work_dir),
                    checkpoint_dir=run_relative(os.path.dirname(os.path.abspath(path)), self.work_dir),
                    history=self.history, config=self.cfg, hooks=hook_states)
        scaler = self.scaler if self.scaler is not None and self.scaler.is_enabled() else None
        return save_checkpoint(path, self.model, self.optimizer, self.scheduler, scaler, meta)

    def _apply_resume(self) -> None:
        from antgo.engine.checkpoint import CheckpointError, check_resume_optimizer, restore_rng
        from antgo.engine.loading import resolve_beside_checkpoint

        ckpt, self._resume = self._resume, None
        if ckpt is None:
            return
        for name in ("optimizer", "scheduler"):
            if name not in ckpt:
                raise CheckpointError(f"{ckpt['path']} has no '{name}' state; use load_from for weights only")
        check_resume_optimizer(ckpt, self.optimizer, str(ckpt["path"]))  # before torch takes the state in
        for name in ("optimizer", "scheduler"):
            getattr(self, name).load_state_dict(ckpt[name])
        if "scaler" in ckpt and self.scaler is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        meta = ckpt.get("meta", {})
        self.start_epoch, self.iter = int(meta.get("epoch", 0)), int(meta.get("iter", 0))
        self.latest_checkpoint = str(ckpt["path"])  # the newest state there is until this run saves one
        for key in ("best_score", "best_metric", "best_rule", "best_epoch", "best_iter"):
            setattr(self, key, meta.get(key))
        self.best_checkpoint = resolve_beside_checkpoint(meta.get("best_checkpoint"), str(ckpt["path"]), meta)
        self.best_metrics = dict(meta.get("best_metrics") or {})
        self.history = list(meta.get("history") or [])
        for hook in self.hooks:
            state = (meta.get("hooks") or {}).get(type(hook).__name__)
            if state:
                hook.load_state_dict(state)
        restore_rng(ckpt.get("rng"))

    # ---------------------------------------------------------------- the run
    def _requested_length(self, max_epochs: int | None, max_iters: int | None) -> tuple[str, int]:
        """``('max_epochs', N)`` or ``('max_iters', N)``: the arguments, else the config's; checked only."""
        if max_epochs is not None and max_iters is not None:
            raise ValueError("pass max_epochs or max_iters to start_train, not both")
        if max_epochs is None and max_iters is None:
            max_epochs, max_iters = self.cfg.get("max_epochs"), self.cfg.get("max_iters")
            if max_epochs is not None and max_iters is not None:
                raise KeyError("the config sets both max_epochs and max_iters; keep one of the two top-level keys "
                               "(e.g. --cfg-options max_epochs=None) or pass --max-iters / start_train(max_iters=N)")
        if max_epochs is None and max_iters is None:
            raise KeyError("max_epochs is not set: pass start_train(max_epochs=N) or set the top-level config "
                           "key max_epochs = N (or max_iters = N for iteration-based training)")
        value = max_epochs if max_epochs is not None else max_iters
        name = "max_epochs" if max_epochs is not None else "max_iters"
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
        return name, int(value)

    def _run_length(self, max_epochs: int | None, max_iters: int | None) -> None:
        """Epoch mode (``max_epochs``) or iteration mode (``max_iters``); arguments win over the config."""
        name, value = self._requested_length(max_epochs, max_iters)
        self.by_epoch = name == "max_epochs"
        infinite = not self.by_epoch
        if self.train_loader is None or infinite != self._loader_is_infinite():
            self._build_train_loader(infinite)  # start_train(max_iters=...) after an epoch loader, or back
        self.iters_per_epoch = len(self.train_loader)
        if self.by_epoch:
            self.max_epochs, self.max_iters = value, value * self.iters_per_epoch
        else:
            self.max_iters = value
            self.max_epochs = math.ceil(self.max_iters / self.iters_per_epoch)
        # the dumped config.py says how long it ran (--max-epochs / --max-iters), with one of the two keys set
        self.cfg[name] = value
        other = "max_iters" if self.by_epoch else "max_epochs"
        if self.cfg.get(other) is not None:
            self.cfg[other] = None

    def _loader_is_infinite(self) -> bool:
        from antgo.data.builder import InfiniteSampler

        return isinstance(getattr(self.train_loader, "sampler", None), InfiniteSampler)

    def _prepare_run(self, max_epochs: int | None, max_iters: int | None = None) -> None:
        from antgo.engine.optim import build_lr_scheduler

        if self.train_loader is None:
            self.config_dataloader()
        self._run_length(max_epochs, max_iters)
        if self.model is None:
            self.config_model()
        # iteration mode: the schedule counts iterations (a Step milestone is an iteration)
        epochs, per_epoch = (self.max_epochs, self.iters_per_epoch) if self.by_epoch else (self.max_iters, 1)
        self.scheduler = build_lr_scheduler(self.optimizer, self.cfg.get("lr_config"), epochs, per_epoch)
        self._apply_resume()
        if not self.by_epoch:
            self.start_epoch = self.iter // self.iters_per_epoch
        if self.iter >= self.max_iters:
            logger.warning("the checkpoint already has %d iterations (%d epochs; run length %d iterations): "
                           "nothing to train", self.iter, self.start_epoch, self.max_iters)

    def start_train(self, max_epochs: int | None = None, max_iters: int | None = None) -> dict[str, Any]:
        """Train for ``max_epochs`` or ``max_iters`` (None: the config's); returns the run summary."""
        from antgo.engine.runlock import RunLock, folder_lost

        log_handler = None
        # before anything is written: a second run on this folder must not touch train.log or checkpoints
        run_lock = RunLock(self.work_dir).acquire() if self.rank == 0 else None
        try:
            self._requested_length(max_epochs, max_iters)  # a config error first: it names the key to fix
            self._check_run_folder()  # a refused run writes nothing there, not even a line of train.log
            if self.rank == 0:
                log_handler = add_file_handler(os.path.join(self.work_dir, "train.log"))
                log_handler.addFilter(lambda _: not folder_lost(self.work_dir))  # another run's train.log by then
            self._prepare_run(max_epochs, max_iters)
            self._first_step_pending = True  # config.py is written once the first step has passed
            logger.info("Training %s on %s for %s (%d iters/epoch, amp %s, channels_last %s), work_dir %s",
                        type(self.model).__name__, self.device,
                        f"epochs {self.start_epoch + 1}..{self.max_epochs}" if self.by_epoch
                        else f"iterations {self.iter + 1}..{self.max_iters}", self.iters_per_epoch, self.amp,
                        self.channels_last, self.work_dir)
            with first_forward("the validation check before training"):
                self.call_hook("before_run")
            try:
                self.meter.start(self.iter)
                self.epoch = self.start_epoch
                while self.iter < self.max_iters:
                    self._run_epoch()
                    self.epoch += 1
                    if self.stop_reason:
                        logger.info("Stopped after epoch %d, iteration %d: %s", self.epoch, self.iter,
                                    self.stop_reason)
                        break
                self.epoch = max(self.epoch - 1, self.start_epoch)  # the last epoch run (0-based)
            finally:
                self.call_hook("after_run")
            best = (f"best {self.best_metric}={self.best_score:.4f} (epoch {self.best_epoch}) {self.best_checkpoint}"
                    if self.best_score is not None else "no best checkpoint (no validation)")
            logger.info("Done after %d iterations: %s; latest %s", self.iter, best, self.latest_checkpoint)
            return self.result()
        except Exception as exc:  # recorded in train.log, then re-raised: a failed run must fail
            # validation's own note, if memory ran out there, comes first and stays the only one
            memory = (is_out_of_memory(exc) or is_worker_death(exc)) and note_out_of_memory(
                exc, f"in training ({self.describe_iter(self.iter + 1)})", self.train_loader, "data.train_dataloader",
                self.device, training=True)
            if (memory or isinstance(exc, (NonFiniteError, CheckpointWriteError))) and self.latest_checkpoint:
                exc.add_note(f"the last good checkpoint is {self.latest_checkpoint}")
            logger.error("Training failed at epoch %d, iter %d: %s: %s", self.epoch + 1, self.iter,
                         type(exc).__name__, exc)
            raise
        finally:
            self._data_iter = None  # the endless iterator's persistent workers end with the run
            remove_handler(log_handler)
            if run_lock is not None:
                run_lock.release()
            if self._owns_process_group:
                import torch.distributed as dist

                dist.destroy_process_group()
                self._owns_process_group = False

    def _epoch_batches(self) -> Any:
        """Epoch mode: the loader, reshuffled from (seed, epoch). Iteration mode: the next batches of one
        endless iterator (created once: persistent workers never restart), up to the pass end or max_iters."""
        if self.by_epoch:
            generator = getattr(self.train_loader, "generator", None)
            if generator is not None:  # shuffle order and worker seeds depend on (seed, epoch) only
                generator.manual_seed(self.seed + self.rank + 1000003 * self.epoch)
            sampler = getattr(self.train_loader, "sampler", None)
            if callable(getattr(sampler, "set_epoch", None)):
                sampler.set_epoch(self.epoch)
            return self.train_loader
        if self._data_iter is None:
            self.train_loader.sampler.set_start(self.iter * int(self.train_loader.batch_size))
            self._data_iter = iter(self.train_loader)
        first = self.iter - self.epoch * self.iters_per_epoch
        return itertools.islice(self._data_iter, min(self.iters_per_epoch - first, self.max_iters - self.iter))

    def _run_epoch(self) -> None:
        """One epoch (iteration mode: one pass over the data, or what is left of max_iters)."""
        batches = device_batches(self._epoch_batches(), self.device, self.channels_last, self.train_transform,
                                 self.prefetch)
        self._epoch_sums, self._epoch_count = {}, 0
        self.model.train()
        self.call_hook("before_epoch")
        first = self.iter - self.epoch * self.iters_per_epoch
        end = interval_start = time.perf_counter()
        data_time = 0.0
        for self.inner_iter, batch in enumerate(batches, start=first):
            data_time += time.perf_counter() - end  # waiting for the loader
            self.call_hook("before_iter")  # LrSchedulerHook sets this iteration's lr here
            if self._first_step_pending:
                self._first_step(batch)
            else:
                self.run_step(batch)
            self.iter += 1
            self.log_ready = (self.inner_iter + 1) % self.log_interval == 0 or self.is_pass_end()
            if self.log_ready:  # the only place loss values reach the host
                self._flush(data_time, time.perf_counter() - interval_start)
                data_time, interval_start = 0.0, time.perf_counter()
            self.call_hook("after_iter")
            if self.stop_reason:  # iteration mode: an evaluation in after_iter asked to stop
                break
            end = time.perf_counter()
        self._record_epoch()  # before after_epoch: EvalHook adds 'val', CheckpointHook saves the history
        self.call_hook("after_epoch")

    def _first_step(self, batch: Mapping[str, Any]) -> None:
        """The run's first step, with the checks whose torch errors name no config key. Once it has passed the
        run exists and its config.py is written: a run failing before leaves the folder's config.py as it was."""
        self._check_fields(batch)
        with first_forward("the first training step"):
            self.run_step(batch)
        self._first_step_pending = False
        if self.rank == 0:
            self.cfg.dump(os.path.join(self.work_dir, "config.py"))

    def _check_fields(self, batch: Mapping[str, Any]) -> None:
        """``forward_train(**batch)`` must take the batch; a field named otherwise (``lbl`` for ``label``) is
        reported with the batch's fields, the parameters forward_train needs and the config key naming them."""
        try:
            signature = inspect.signature(self.model.forward_train)
        except (TypeError, ValueError):  # no signature to read: the call itself tells
            return
        try:
            signature.bind(**batch)
        except TypeError as exc:
            needed = [p.name for p in signature.parameters.values() if p.default is p.empty
                      and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
            raise TypeError(f"{type(self.model).__name__}.forward_train cannot take the training batch ({exc}): "
                            f"the batch has the fields {list(batch)}, forward_train needs {needed}. Name them in "
                            f"data.train.inputs_def.fields (or rename them with data.train.inputs_def.alias)") \
                from None

    def is_pass_end(self) -> bool:
        """The iteration just run closes the epoch (or the run)."""
        return self.iter >= self.max_iters or self.iter % self.iters_per_epoch == 0

    def run_step(self, batch: Mapping[str, Any]) -> None:
        """Forward, backward, (clip,) step on a batch already on the device (``device_batches``). Queues device
        work only: no loss value is read here."""
        with amp_context(self.device, self.amp, self.amp_dtype):
            outputs = self._train_step(**batch)
        loss, terms = parse_losses(outputs)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip or self.log_grad_norm:
            self.scaler.unscale_(self.optimizer)
            clip = self.grad_clip or {"max_norm": float("inf")}  # inf: measure without clipping
            terms["grad_norm"] = torch.nn.utils.clip_grad_norm_(self._params, **clip).detach()
        if self.skip_nonfinite and not self._step_is_finite(loss, terms):
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.update()
            return
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.outputs = terms
        self.meter.add(terms)

    def _step_is_finite(self, loss: torch.Tensor, terms: Mapping[str, torch.Tensor]) -> bool:
        """``optimizer_config.skip_nonfinite=N``: skip a step whose loss or gradients are NaN/Inf, at most N
        times per run. Costs one host sync per step (the price of deciding before the update)."""
        ok = torch.isfinite(loss.detach()) & grads_are_finite(self._params)
        if self.world_size > 1:  # every rank must take the same decision
            import torch.distributed as dist

            flag = ok.to(self.device, torch.float32)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            ok = flag > 0
        if bool(ok):
            return True
        self.skipped_steps += 1
        bad = [k for k, v in terms.items() if not bool(torch.isfinite(v))] or ["gradients"]
        where = self.describe_iter(self.iter + 1)
        if self.skipped_steps > self.skip_nonfinite:
            raise NonFiniteError(f"non-finite {', '.join(bad)} at {where}: {self.skipped_steps} bad steps, more "
                                 f"than optimizer_config.skip_nonfinite={self.skip_nonfinite}",
                                 iteration=self.iter + 1, keys=bad)
        logger.warning("skipped the step at %s: non-finite %s (%d of at most %d)", where, ", ".join(bad),
                       self.skipped_steps, self.skip_nonfinite)
        return False

    def describe_iter(self, k: int) -> str:
        """``epoch e, iter i/N (global iter k)`` for global iteration ``k`` (1-based)."""
        epoch, inner = divmod(k - 1, max(self.iters_per_epoch, 1))
        return f"epoch {epoch + 1}, iter {inner + 1}/{self.iters_per_epoch} (global iter {k})"

    def _flush(self, data_time: float, elapsed: float) -> None:
        """Interval averages to ``log_vars`` (one host transfer); raises on a non-finite loss term."""
        count = self.meter.count
        averages = self.meter.flush(self.iter, self.describe_iter)
        if not count:
            return
        averages["lr"] = float(self.optimizer.param_groups[0]["lr"])
        averages["data_time"], averages["time"] = data_time / count, elapsed / count
        self.log_vars = averages
        for key, value in averages.items():
            self._epoch_sums[key] = self._epoch_sums.get(key, 0.0) + value * count
        self._epoch_count += count

    def check_finite(self, where: str) -> None:
        """Raise ``NonFiniteError`` if a loss term since the last flush, or any weight/buffer, is NaN/Inf."""
        self.meter.check(self.describe_iter)
        bad = find_nonfinite_state(self.model)
        if bad:
            raise NonFiniteError(f"non-finite weights or buffers (BN statistics) {bad} at "
                                 f"{self.describe_iter(self.iter)}, found before {where}; nothing was written",
                                 iteration=self.iter, keys=bad)

    def _record_epoch(self) -> None:
        n = max(self._epoch_count, 1)
        train = {k: v / n for k, v in self._epoch_sums.items() if k != "lr"}
        train["lr"] = self.log_vars.get("lr", 0.0)
        self.history.append({"epoch": self.epoch + 1, "iter": self.iter, "train": train,
                             "val": self._pending_val})
        self._pending_val = None

    def result(self) -> dict[str, Any]:
        """The summary ``start_train`` returns."""
        return dict(best_checkpoint=self.best_checkpoint, latest_checkpoint=self.latest_checkpoint,
                    best_score=self.best_score, best_metric=self.best_metric, epochs=self.max_epochs,
                    iters=self.iter, max_iters=self.max_iters, history=list(self.history), work_dir=self.work_dir,
                    epochs_run=self.history[-1]["epoch"] if self.history else 0, stop_reason=self.stop_reason,
                    best_weights=self.best_weights)

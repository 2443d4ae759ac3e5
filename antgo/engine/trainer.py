"""``Trainer``: builds data, model, optimizer and hooks from a config, and runs the epoch loop.

The loop (:meth:`Trainer._run_epoch`) reads top to bottom; everything optional is a hook, dispatched in
one place (:meth:`Trainer.call_hook`) that names a failing hook. Exceptions propagate: a failed run raises.
"""
from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from antgo.config import load_config  # noqa: F401  (the one config loader; re-exported for callers)
from antgo.engine.evaluation import amp_context, json_safe, move_to_device
from antgo.engine.hooks.base import STAGES, Hook
from antgo.engine.logging import add_file_handler, remove_handler

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


def parse_losses(outputs: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
    """Sum every output whose key contains ``loss`` (a tensor or a list of tensors); all outputs as floats."""
    if not isinstance(outputs, Mapping):
        raise TypeError(f"forward_train must return a dict of losses, got {type(outputs).__name__}")
    total: torch.Tensor | None = None
    log_vars: dict[str, float] = {}
    for key, value in outputs.items():
        if isinstance(value, torch.Tensor):
            value = value.mean()
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
            value = sum(v.mean() for v in value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            log_vars[key] = float(value)
            continue
        else:
            continue  # non-numeric outputs are neither summed nor logged
        if "loss" in key:
            total = value if total is None else total + value
        log_vars[key] = float(value.detach())
    if total is None:
        raise ValueError(f"forward_train returned no tensor whose key contains 'loss' (keys: {sorted(outputs)})")
    log_vars["loss"] = float(total.detach())
    return total, log_vars


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
        from antgo.engine.device import resolve_device

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
        self.amp = bool(self.cfg.get("amp", False))
        self.amp_dtype = str(self.cfg.get("amp_dtype", "bfloat16"))
        if self.amp and self.device.type != "cuda":
            logger.warning("amp=True needs CUDA (bf16 autocast); running in float32 on %s", self.device)
            self.amp = False
        self.channels_last = bool(self.cfg.get("channels_last", False))
        opt_cfg = dict(self.cfg.get("optimizer_config") or {})
        grad_clip = opt_cfg.pop("grad_clip", None)
        if opt_cfg:
            raise KeyError(f"optimizer_config has unknown keys {sorted(opt_cfg)}; supported: "
                           f"grad_clip=dict(max_norm=..., norm_type=2) or None")
        self.grad_clip = dict(grad_clip) if grad_clip else None
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
        self.log_vars: dict[str, float] = {}
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
        self.stop_reason: str | None = None  # set by request_stop (early stopping): the loop ends after this epoch
        self.best_weights: str | None = None

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
        the validation loader (``data.val`` + ``data.val_dataloader``, needs ``evaluation.metric``)."""
        from antgo.data.builder import build_dataloader, build_dataset
        from antgo.engine.loading import require_samples

        data = self.cfg.get("data")
        if not isinstance(data, Mapping) or "train" not in data:
            raise KeyError("config has no data.train; add data=dict(train=dict(type=..., ...), ...)")
        seed = self.seed + self.rank
        train_args = {"shuffle": True, "seed": seed, **dict(data.get("train_dataloader") or {})}
        reader = build_dataset(data["train"], "data.train")
        require_samples(reader, "data.train")
        if self.world_size > 1:  # each rank reads its own 1/world_size of every epoch
            from torch.utils.data.distributed import DistributedSampler

            train_args["sampler"] = DistributedSampler(reader, self.world_size, self.rank, seed=self.seed,
                                                       shuffle=bool(train_args.pop("shuffle")),
                                                       drop_last=bool(train_args.get("drop_last", False)))
        self.train_loader = build_dataloader(reader, **train_args)
        if len(self.train_loader) == 0:
            raise ValueError("data.train gives no batch: the data set is smaller than samples_per_gpu with "
                             "drop_last=True; lower data.train_dataloader.samples_per_gpu")
        self.val_loader = None
        evaluation = self.cfg.get("evaluation")
        if not with_validate:
            return
        if data.get("val") is None or not evaluation or not evaluation.get("metric"):
            if data.get("val") is not None or evaluation:
                logger.warning("validation off: it needs both data.val and evaluation.metric")
            return
        val_args = {"shuffle": False, "seed": seed, **dict(data.get("val_dataloader") or {})}
        val_reader = build_dataset(data["val"], "data.val")
        require_samples(val_reader, "data.val")  # an empty val split would save best.pth at a score of 0
        self.val_loader = build_dataloader(val_reader, **val_args)

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
        if self.history and self.history[-1]["epoch"] == self.epoch + 1:
            self.history[-1]["val"] = json_safe(metrics)  # NaN (absent class) -> None: the history is JSON
        self.call_hook("after_val", metrics)

    def request_stop(self, reason: str) -> None:
        """End training after the current epoch (its checkpoint hooks still run: it is saved as the last one)."""
        self.stop_reason = reason

    def resolve_out_dir(self, out_dir: str | None) -> str:
        """``None`` → ``work_dir``; a relative path → under ``work_dir`` (the rule ``find_checkpoint`` reads by)."""
        from antgo.engine.loading import resolve_out_dir

        return resolve_out_dir(self.work_dir, out_dir)

    def save_checkpoint(self, path: str) -> str:
        """Full state: weights, optimizer, scheduler, scaler, counters, best score, history, RNG states."""
        from antgo.engine.checkpoint import save_checkpoint
        from antgo.engine.loading import run_relative

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
        from antgo.engine.checkpoint import CheckpointError, restore_rng
        from antgo.engine.loading import resolve_beside_checkpoint

        ckpt, self._resume = self._resume, None
        if ckpt is None:
            return
        for name in ("optimizer", "scheduler"):
            if name not in ckpt:
                raise CheckpointError(f"{ckpt['path']} has no '{name}' state; use load_from for weights only")
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
    def _prepare_run(self, max_epochs: int | None) -> None:
        from antgo.engine.optim import build_lr_scheduler

        if max_epochs is None:
            max_epochs = self.cfg.get("max_epochs")
        if max_epochs is None:
            raise KeyError("max_epochs is not set: pass start_train(max_epochs=N) or set the top-level config "
                           "key max_epochs = N")
        if int(max_epochs) < 1:
            raise ValueError(f"max_epochs must be >= 1, got {max_epochs}")
        if self.train_loader is None:
            self.config_dataloader()
        if self.model is None:
            self.config_model()
        self.max_epochs, self.iters_per_epoch = int(max_epochs), len(self.train_loader)
        self.cfg["max_epochs"] = self.max_epochs  # the dumped config.py says how long it ran (--max-epochs)
        self.max_iters = self.max_epochs * self.iters_per_epoch
        self.scheduler = build_lr_scheduler(self.optimizer, self.cfg.get("lr_config"), self.max_epochs,
                                            self.iters_per_epoch)
        self._apply_resume()
        if self.start_epoch >= self.max_epochs:
            logger.warning("the checkpoint already has %d epochs (max_epochs=%d): nothing to train",
                           self.start_epoch, self.max_epochs)

    def start_train(self, max_epochs: int | None = None) -> dict[str, Any]:
        """Train until ``max_epochs`` (None: the config's ``max_epochs``); returns the run summary."""
        from antgo.engine.runlock import RunLock

        log_handler = None
        # before anything is written: a second run on this folder must not touch train.log or checkpoints
        run_lock = RunLock(self.work_dir).acquire() if self.rank == 0 else None
        if self.rank == 0:
            log_handler = add_file_handler(os.path.join(self.work_dir, "train.log"))
        try:
            self._prepare_run(max_epochs)
            if self.rank == 0:
                self.cfg.dump(os.path.join(self.work_dir, "config.py"))
            logger.info("Training %s on %s for epochs %d..%d (%d iters/epoch), work_dir %s",
                        type(self.model).__name__, self.device, self.start_epoch + 1, self.max_epochs,
                        self.iters_per_epoch, self.work_dir)
            self.call_hook("before_run")
            try:
                for self.epoch in range(self.start_epoch, self.max_epochs):
                    self._run_epoch()
                    if self.stop_reason:
                        logger.info("Stopped after epoch %d of %d: %s", self.epoch + 1, self.max_epochs,
                                    self.stop_reason)
                        break
            finally:
                self.call_hook("after_run")
            best = (f"best {self.best_metric}={self.best_score:.4f} (epoch {self.best_epoch}) {self.best_checkpoint}"
                    if self.best_score is not None else "no best checkpoint (no validation)")
            logger.info("Done after %d iterations: %s; latest %s", self.iter, best, self.latest_checkpoint)
            return self.result()
        except Exception as exc:  # recorded in train.log, then re-raised: a failed run must fail
            logger.error("Training failed at epoch %d, iter %d: %s: %s", self.epoch + 1, self.iter,
                         type(exc).__name__, exc)
            raise
        finally:
            remove_handler(log_handler)
            if run_lock is not None:
                run_lock.release()
            if self._owns_process_group:
                import torch.distributed as dist

                dist.destroy_process_group()
                self._owns_process_group = False

    def _set_loader_epoch(self, epoch: int) -> None:
        """Shuffle order and worker seeds depend on (seed, epoch) only, so a resumed run sees the same data."""
        generator = getattr(self.train_loader, "generator", None)
        if generator is not None:
            generator.manual_seed(self.seed + self.rank + 1000003 * epoch)
        sampler = getattr(self.train_loader, "sampler", None)
        if callable(getattr(sampler, "set_epoch", None)):
            sampler.set_epoch(epoch)

    def _run_epoch(self) -> None:
        """One epoch: the whole training step, top to bottom."""
        self._set_loader_epoch(self.epoch)
        self._epoch_sums = {}
        self.model.train()
        self.call_hook("before_epoch")
        end = time.perf_counter()
        for self.inner_iter, batch in enumerate(self.train_loader):
            data_time = time.perf_counter() - end
            self.call_hook("before_iter")  # LrSchedulerHook sets this iteration's lr here
            batch = move_to_device(batch, self.device, self.channels_last)
            with amp_context(self.device, self.amp, self.amp_dtype):
                outputs = self._train_step(**batch)
            loss, log_vars = parse_losses(outputs)
            if not math.isfinite(log_vars["loss"]):
                raise FloatingPointError(
                    f"loss is {log_vars['loss']} at epoch {self.epoch + 1}, iter {self.inner_iter + 1}/"
                    f"{self.iters_per_epoch} (global iter {self.iter + 1}); outputs: {log_vars}")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.grad_clip:
                self.scaler.unscale_(self.optimizer)
                params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
                log_vars["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, **self.grad_clip))
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.iter += 1
            log_vars["lr"] = float(self.optimizer.param_groups[0]["lr"])
            log_vars["data_time"], log_vars["time"] = data_time, time.perf_counter() - end
            self.log_vars = log_vars
            for key, value in log_vars.items():
                self._epoch_sums[key] = self._epoch_sums.get(key, 0.0) + value
            self.call_hook("after_iter")
            end = time.perf_counter()
        self._record_epoch()  # before after_epoch: EvalHook adds 'val', CheckpointHook saves the history
        self.call_hook("after_epoch")

    def _record_epoch(self) -> None:
        n = max(self.inner_iter + 1, 1)
        train = {k: v / n for k, v in self._epoch_sums.items() if k != "lr"}
        train["lr"] = self.log_vars.get("lr", 0.0)
        self.history.append({"epoch": self.epoch + 1, "iter": self.iter, "train": train, "val": None})

    def result(self) -> dict[str, Any]:
        """The summary ``start_train`` returns."""
        return dict(best_checkpoint=self.best_checkpoint, latest_checkpoint=self.latest_checkpoint,
                    best_score=self.best_score, best_metric=self.best_metric, epochs=self.max_epochs,
                    iters=self.iter, history=list(self.history), work_dir=self.work_dir,
                    epochs_run=self.history[-1]["epoch"] if self.history else 0, stop_reason=self.stop_reason,
                    best_weights=self.best_weights)

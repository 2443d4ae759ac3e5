"""``CheckpointHook``: ``epoch_N.pth`` every ``interval`` epochs and on the last one, plus ``latest.pth``;
with ``max_iters`` training: ``iter_N.pth`` every ``interval`` iterations."""
from __future__ import annotations

import glob
import logging
import os
import shutil
from typing import TYPE_CHECKING

from antgo.engine.checkpoint import NUMBERED_CHECKPOINT_RE
from antgo.engine.hooks.base import PRIORITIES, Hook
from antgo.registry import HOOKS

if TYPE_CHECKING:  # pragma: no cover
    from antgo.engine.trainer import Trainer

logger = logging.getLogger(__name__)


def link_or_copy(src: str, dst: str) -> None:
    """Make ``dst`` a hard link to ``src`` (a copy where links are not possible), replacing ``dst`` atomically.

    Not a symlink: ``latest.pth`` must stay valid when old epoch files are pruned or the folder is copied.
    """
    tmp = f"{dst}.tmp{os.getpid()}"
    if os.path.lexists(tmp):
        os.remove(tmp)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


@HOOKS.register_module()
class CheckpointHook(Hook):
    """Save full training state after epochs (``max_epochs``) or iterations (``max_iters``).

    Args:
        interval: save every ``interval`` epochs, or iterations in iteration mode (<= 0: only at the end,
            when ``save_last``).
        max_keep_ckpts: keep only the newest ``epoch_*.pth`` / ``iter_*.pth`` files (<= 0 keeps all).
        save_last: also save after the last epoch whatever the interval.
        out_dir: folder; relative paths resolve under the trainer's ``work_dir`` (None = ``work_dir``).
    """

    priority = PRIORITIES["NORMAL"]

    def __init__(self, interval: int = 1, max_keep_ckpts: int = -1, save_last: bool = True,
                 out_dir: str | None = None) -> None:
        self.interval = int(interval)
        self.max_keep_ckpts = int(max_keep_ckpts)
        self.save_last = bool(save_last)
        self.out_dir = out_dir
        self.saved: list[str] = []

    def before_run(self, trainer: "Trainer") -> None:
        self.out_dir = trainer.resolve_out_dir(self.out_dir)

    def after_epoch(self, trainer: "Trainer") -> None:
        if getattr(trainer, "by_epoch", True):
            last = self.is_last_epoch(trainer) or bool(getattr(trainer, "stop_reason", None))  # early stop: last too
            if self.every_n_epochs(trainer, self.interval) or (self.save_last and last):
                self._save(trainer, f"epoch_{trainer.epoch + 1}.pth")

    def after_iter(self, trainer: "Trainer") -> None:
        if not getattr(trainer, "by_epoch", True):
            last = self.is_last_iter(trainer) or bool(getattr(trainer, "stop_reason", None))
            if self.every_n_iters(trainer, self.interval) or (self.save_last and last):
                self._save(trainer, f"iter_{trainer.iter}.pth")

    def _save(self, trainer: "Trainer", name: str) -> None:
        if trainer.rank != 0:
            return
        path = os.path.join(self.out_dir, name)
        trainer.save_checkpoint(path)  # refuses non-finite state: latest.pth keeps the last good one
        latest = os.path.join(self.out_dir, "latest.pth")
        link_or_copy(path, latest)
        trainer.latest_checkpoint = latest
        logger.info("Saved checkpoint %s", path)
        self._prune()

    def _prune(self) -> None:
        if self.max_keep_ckpts <= 0:
            return
        found = []
        for path in glob.glob(os.path.join(self.out_dir, "*_*.pth")):
            match = NUMBERED_CHECKPOINT_RE.fullmatch(os.path.basename(path))
            if match:
                found.append((int(match.group(1)), path))
        for _, path in sorted(found)[:-self.max_keep_ckpts]:
            os.remove(path)
            logger.debug("Removed old checkpoint %s", path)

"""``LrSchedulerHook``: sets the learning rate of the iteration about to run."""
from __future__ import annotations

from typing import TYPE_CHECKING

from antgo.engine.hooks.base import PRIORITIES, Hook
from antgo.registry import HOOKS

if TYPE_CHECKING:  # pragma: no cover
    from antgo.engine.trainer import Trainer


@HOOKS.register_module()
class LrSchedulerHook(Hook):
    """Calls ``trainer.scheduler.step(trainer.iter)`` before every iteration.

    The schedule is a pure function of the global iteration, so a resumed run continues it exactly.
    """

    priority = PRIORITIES["VERY_HIGH"]

    def before_iter(self, trainer: "Trainer") -> None:
        if trainer.scheduler is not None:
            trainer.scheduler.step(trainer.iter)

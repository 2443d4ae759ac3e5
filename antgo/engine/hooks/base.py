"""``Hook``: the extension point of the training loop, and the priority table.

A hook overrides any of ``before_run``, ``before_epoch``, ``before_iter``, ``after_iter``,
``after_epoch``, ``after_val`` and ``after_run``. Hooks run in ascending ``priority`` (lower first);
hooks of equal priority keep their registration order.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from antgo.engine.trainer import Trainer

PRIORITIES: dict[str, int] = {
    "HIGHEST": 0,
    "VERY_HIGH": 10,
    "HIGH": 30,
    "ABOVE_NORMAL": 40,
    "NORMAL": 50,
    "BELOW_NORMAL": 60,
    "LOW": 70,
    "VERY_LOW": 90,
    "LOWEST": 100,
}

STAGES = ("before_run", "before_epoch", "before_iter", "after_iter", "after_epoch", "after_val", "after_run")


def get_priority(priority: int | str) -> int:
    """An int priority from an int or a name of ``PRIORITIES`` (case-insensitive)."""
    if isinstance(priority, bool):
        raise TypeError(f"hook priority must be an int or one of {sorted(PRIORITIES)}, got {priority!r}")
    if isinstance(priority, int):
        return priority
    if isinstance(priority, str) and priority.upper() in PRIORITIES:
        return PRIORITIES[priority.upper()]
    raise ValueError(f"unknown hook priority {priority!r}; use an int or one of {sorted(PRIORITIES)}")


class Hook:
    """Base class: every method is a no-op. ``priority`` may be overridden per class or per instance."""

    priority: int = PRIORITIES["NORMAL"]

    def before_run(self, trainer: "Trainer") -> None:
        pass

    def after_run(self, trainer: "Trainer") -> None:
        pass

    def before_epoch(self, trainer: "Trainer") -> None:
        pass

    def after_epoch(self, trainer: "Trainer") -> None:
        pass

    def before_iter(self, trainer: "Trainer") -> None:
        pass

    def after_iter(self, trainer: "Trainer") -> None:
        pass

    def after_val(self, trainer: "Trainer", metrics: dict[str, float]) -> None:
        pass

    # Small helpers hooks commonly need.
    @staticmethod
    def every_n_epochs(trainer: "Trainer", n: int) -> bool:
        return n > 0 and (trainer.epoch + 1) % n == 0

    @staticmethod
    def every_n_iters(trainer: "Trainer", n: int) -> bool:
        return n > 0 and trainer.iter % n == 0

    @staticmethod
    def is_last_epoch(trainer: "Trainer") -> bool:
        return trainer.epoch + 1 == trainer.max_epochs

    @staticmethod
    def is_last_iter(trainer: "Trainer") -> bool:
        return trainer.iter >= trainer.max_iters

    @staticmethod
    def is_last_inner_iter(trainer: "Trainer") -> bool:
        return trainer.inner_iter + 1 == trainer.iters_per_epoch

    def state_dict(self) -> dict[str, Any]:
        """Hook state stored in checkpoints (e.g. a logger's running sums); empty by default."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}(priority={self.priority})"

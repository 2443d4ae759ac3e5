"""``from antgo.framework.helper.dataset.pipelines import imnormalize`` and the built-in transforms."""
from antgo.data.transforms import *  # noqa: F401,F403
from antgo.data.transforms import imnormalize
from antgo.registry import PIPELINES

__all__ = ["imnormalize", "PIPELINES"]

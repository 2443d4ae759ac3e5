"""Registered transforms (``TRANSFORMS``/``PIPELINES``); each is ``__call__(results: dict) -> dict``.

Random choices use the global ``np.random`` state, which the DataLoader's ``worker_init_fn`` seeds
per worker, so augmentation is reproducible for a given seed.
"""
from antgo.data.transforms.compose import Compose
from antgo.data.transforms.crop import CenterCrop, Pad, RandomScaleCrop
from antgo.data.transforms.formatting import Normalize, ToTensor, UnSqueeze, imnormalize
from antgo.data.transforms.geometric import RandomFlipImage, ResizeByShort, ResizeS, Rotation
from antgo.data.transforms.photometric import ColorDistort

__all__ = [
    "Compose", "Rotation", "ResizeS", "ResizeByShort", "RandomFlipImage", "ColorDistort", "ToTensor", "Normalize",
    "UnSqueeze", "imnormalize", "RandomScaleCrop", "Pad", "CenterCrop",
]

"""Shared fixtures: a tiny VOC tree (session-scoped) and a tiny segmentation config on it."""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import torch

# Test tensors are tiny: intra-op threads only add synchronisation, and on a busy 2-core machine spinning
# OpenMP threads slow a test run down many times over. ANTGO_TEST_THREADS overrides.
torch.set_num_threads(int(os.environ.get("ANTGO_TEST_THREADS", "1")))

MINI_CLASSES = ["background", "circle", "square", "triangle"]
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


@pytest.fixture(scope="session")
def mini_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A deterministic VOC 2012 tree: 12 train / 4 val images of 32-48 px, 4 classes, void borders."""
    from antgo.data.datasets.synthetic import make_voc_tree

    root = tmp_path_factory.mktemp("mini_voc")
    return make_voc_tree(root, splits={"train": 12, "val": 4}, size_range=(32, 48), num_classes=len(MINI_CLASSES),
                         seed=0, class_names=MINI_CLASSES)


def _split(voc_dir: Path, split: str, size: int, aug: bool) -> dict[str, Any]:
    pipeline: list[dict[str, Any]] = [dict(type="ResizeS", target_dim=(size, size))]
    if aug:
        pipeline.append(dict(type="RandomFlipImage", swap_ids=[], swap_labels=[]))
    pipeline += [dict(type="ToTensor", keys=["image"]),
                 dict(type="Normalize", mean=MEAN, std=STD, keys=["image"]),
                 dict(type="UnSqueeze", axis=0, keys=["segments"])]
    return dict(type="Pascal2012", train_or_test=split, dir=str(voc_dir),
                ext_params=dict(task_type="SEGMENTATION", aug=False), pipeline=pipeline,
                inputs_def=dict(fields=["image", "segments"]))


def make_tiny_seg_cfg(voc_dir: Path, size: int = 32, batch: int = 4, max_epochs: int = 2) -> dict[str, Any]:
    """A seed-shaped config with a very small EncoderDecoder (SimpleConvNet + SimpleHead)."""
    loader = dict(samples_per_gpu=batch, workers_per_gpu=0, drop_last=False)
    return dict(
        seed=0,
        max_epochs=max_epochs,
        model=dict(type="EncoderDecoder",
                   backbone=dict(type="SimpleConvNet", in_channels=3, channels=(8, 16)),
                   decode_head=dict(type="SimpleHead", in_channels=16, channels=16,
                                    out_channels=len(MINI_CLASSES), ignore_index=255)),
        optimizer=dict(type="SGD", lr=0.05, momentum=0.9, weight_decay=1e-4),
        optimizer_config=dict(grad_clip=None),
        lr_config=dict(policy="Fixed"),
        log_config=dict(interval=2, hooks=[dict(type="TextLoggerHook")]),
        checkpoint_config=dict(interval=1),
        data=dict(train=_split(voc_dir, "train", size, aug=True),
                  train_dataloader=dict(loader, shuffle=True),
                  val=_split(voc_dir, "val", size, aug=False),
                  val_dataloader=dict(loader, shuffle=False),
                  test=_split(voc_dir, "val", size, aug=False),
                  test_dataloader=dict(loader, shuffle=False)),
        evaluation=dict(interval=1, metric=dict(type="SegMIOU", class_num=len(MINI_CLASSES)), save_best="miou",
                        rule="greater"),
        export=dict(input_shape_list=[[1, 3, size, size]], input_name_list=["image"], output_name_list=["heatmap"]),
    )


@pytest.fixture(scope="session")
def seg_cfg_factory(mini_voc: Path) -> Any:
    """``factory(size=32, batch=4, max_epochs=2)`` → a fresh tiny config on ``mini_voc`` (usable from
    module-scoped fixtures)."""
    return lambda **kw: copy.deepcopy(make_tiny_seg_cfg(mini_voc, **kw))


@pytest.fixture
def tiny_seg_cfg(mini_voc: Path) -> dict[str, Any]:
    """A fresh tiny segmentation config dict (tests may modify it)."""
    return copy.deepcopy(make_tiny_seg_cfg(mini_voc))

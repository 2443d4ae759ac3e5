"""The config's class lists must name the data set's label indices in the data set's order: a permutation would
put every metric and prediction under the wrong class, so training refuses it; other differences warn."""
from __future__ import annotations

import logging

import pytest

from antgo.engine import Trainer
from tests.conftest import MINI_CLASSES


def _metric_names(cfg: dict, names: list[str]) -> dict:
    cfg["evaluation"]["metric"]["class_names"] = names
    return cfg


def test_the_data_sets_classes_in_another_order_are_refused(tiny_seg_cfg, tmp_path) -> None:
    swapped = [MINI_CLASSES[0], MINI_CLASSES[2], MINI_CLASSES[1], MINI_CLASSES[3]]
    trainer = Trainer(_metric_names(tiny_seg_cfg, swapped), work_dir=str(tmp_path / "run"), device="cpu")
    with pytest.raises(ValueError, match=r"evaluation\.metric\.class_names .* in another order than the data "
                                         r"set's label indices \['background', 'circle', 'square', 'triangle'\]"):
        trainer.config_dataloader()


def test_other_names_warn_and_the_same_names_pass(tiny_seg_cfg, tmp_path, caplog) -> None:
    renamed = ["bg", *MINI_CLASSES[1:]]
    with caplog.at_level(logging.WARNING, logger="antgo"):
        Trainer(_metric_names(tiny_seg_cfg, renamed), work_dir=str(tmp_path / "a"), device="cpu").config_dataloader()
        assert "differ from data.train's classes" in caplog.text
        caplog.clear()
        Trainer(_metric_names(tiny_seg_cfg, list(MINI_CLASSES)), work_dir=str(tmp_path / "b"),
                device="cpu").config_dataloader()
        assert "differ from" not in caplog.text


def test_a_label_the_head_has_no_class_for_names_the_class_count_keys() -> None:
    import torch
    import torch.nn.functional as F

    from antgo.engine.trainer import first_forward

    with pytest.raises(IndexError) as info, first_forward("the first training step"):
        F.cross_entropy(torch.zeros(1, 2), torch.tensor([2]))  # torch's own error: "Target 2 is out of bounds."
    assert any("model.head.num_classes" in note for note in info.value.__notes__)


def test_centernet_boxes_of_labels_beyond_its_classes_are_named(caplog) -> None:
    import torch

    from antgo.models.heads.center_head import CenterNetHead

    head = CenterNetHead(in_channels=[8], in_index=[0], num_classes=1, channels=8)
    with caplog.at_level(logging.WARNING, logger="antgo"):
        head.targets((1, 1, 8, 8), (32, 32), [torch.tensor([[2.0, 2.0, 20.0, 20.0], [4.0, 4.0, 12.0, 12.0]])],
                     [torch.tensor([0, 3])])
    assert "boxes with labels [3] are left out of training" in caplog.text and "model.head.num_classes" in caplog.text

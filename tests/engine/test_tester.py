"""Tester and the shared evaluation loop: metric values, ground truth kept from forward_test, outputs."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

import antgo.data  # noqa: F401
import antgo.metrics  # noqa: F401
import antgo.models  # noqa: F401
from antgo.data.builder import build_dataloader, build_dataset
from antgo.engine import Tester, Trainer
from antgo.engine.checkpoint import load_checkpoint
from antgo.engine.evaluation import evaluate, forward_test_inputs
from antgo.metrics import SegMIOU
from antgo.models import build_model


@pytest.fixture(scope="module")
def trained(seg_cfg_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    cfg = seg_cfg_factory()
    trainer = Trainer(copy.deepcopy(cfg), work_dir=str(tmp_path_factory.mktemp("trained")), device="cpu")
    result = trainer.start_train(max_epochs=3)  # builds loaders and model itself
    return cfg, result["best_checkpoint"]


def test_tester_miou_matches_a_hand_computed_confusion_matrix(trained: tuple[dict, str], tmp_path: Path) -> None:
    cfg, checkpoint = trained
    tester = Tester(copy.deepcopy(cfg), work_dir=str(tmp_path), device="cpu")
    tester.config_model(checkpoint=checkpoint)
    metrics = tester.evaluate()

    model = build_model(cfg["model"])
    load_checkpoint(checkpoint, model)
    model.eval()
    loader = build_dataloader(build_dataset(cfg["data"]["test"], "data.test"), samples_per_gpu=3)
    n = 4
    confusion = np.zeros((n, n), np.int64)
    with torch.no_grad():
        for batch in loader:
            pred = model.forward_test(batch["image"])["pred_segments"].numpy().ravel()
            gt = batch["segments"].numpy().ravel().astype(np.int64)
            keep = gt != 255
            confusion += np.bincount(n * gt[keep] + pred[keep], minlength=n * n).reshape(n, n)
    np.testing.assert_array_equal(tester.metrics[0].confusion_matrix, confusion)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    assert metrics["miou"] == pytest.approx(float(np.mean(tp[union > 0] / union[union > 0])))
    saved = json.loads((tmp_path / "eval_results.json").read_text())
    assert saved["miou"] == pytest.approx(metrics["miou"])


def test_tester_writes_visualisations_and_custom_json(trained: tuple[dict, str], tmp_path: Path) -> None:
    cfg, checkpoint = trained
    tester = Tester(copy.deepcopy(cfg), work_dir=str(tmp_path), device="cpu")
    tester.config_model(checkpoint=checkpoint)
    tester.evaluate(json_file=str(tmp_path / "x" / "m.json"), vis_dir=str(tmp_path / "vis"), num_vis=3)
    assert (tmp_path / "x" / "m.json").is_file()
    assert [Path(f).name for f in tester.vis_files] == ["00000.png", "00001.png", "00002.png"]
    image = cv2.imread(tester.vis_files[0])
    assert image.shape == (32, 96, 3)  # input | ground truth | prediction, each 32x32


def test_tester_checkpoint_falls_back_to_config_and_explains_a_missing_one(trained: tuple[dict, str],
                                                                          tmp_path: Path) -> None:
    cfg, checkpoint = trained
    with pytest.raises(ValueError, match="checkpoint"):
        Tester(copy.deepcopy(cfg), work_dir=str(tmp_path), device="cpu").config_model()
    tester = Tester(dict(copy.deepcopy(cfg), checkpoint=checkpoint), work_dir=str(tmp_path), device="cpu")
    tester.config_model()
    assert tester.checkpoint == checkpoint


def test_two_metrics_with_the_same_keys_are_prefixed(trained: tuple[dict, str], tmp_path: Path) -> None:
    cfg, checkpoint = trained
    cfg = copy.deepcopy(cfg)
    cfg["evaluation"]["metric"] = [dict(type="SegMIOU", class_num=4), dict(type="SegMIOU", class_num=4),
                                   dict(type="Accuracy", pred_key="pred_segments", gt_key="segments")]
    tester = Tester(cfg, work_dir=str(tmp_path), device="cpu")
    tester.config_model(checkpoint=checkpoint)
    with pytest.raises(Exception):
        tester.evaluate()  # Accuracy cannot take masks; the error propagates
    cfg["evaluation"]["metric"] = cfg["evaluation"]["metric"][:2]
    tester = Tester(cfg, work_dir=str(tmp_path), device="cpu")
    tester.config_model(checkpoint=checkpoint)
    metrics = tester.evaluate()
    assert metrics["SegMIOU.miou"] == metrics["SegMIOU.miou_2"] and "miou" not in metrics


class GtAware(torch.nn.Module):
    """forward_test names `segments`, so it receives it; `seen` records the keyword arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[set[str]] = []

    def forward_test(self, image: torch.Tensor, segments: torch.Tensor) -> dict[str, Any]:
        self.seen.append({"image", "segments"})
        return {"pred_segments": segments[:, 0].long()}


class GtBlind(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[set[str]] = []

    def forward_test(self, image: torch.Tensor, **kwargs: Any) -> dict[str, Any]:
        self.seen.append({"image", *kwargs})
        return {"pred_segments": torch.zeros(image.shape[0], *image.shape[2:], dtype=torch.long)}


def test_ground_truth_reaches_forward_test_only_when_named(tiny_seg_cfg: dict) -> None:
    loader = build_dataloader(build_dataset(tiny_seg_cfg["data"]["val"], "data.val"), samples_per_gpu=2)
    blind, aware = GtBlind(), GtAware()
    metric = SegMIOU(class_num=4)
    blind.train()
    evaluate(blind, loader, [metric])
    assert blind.seen and all(seen == {"image"} for seen in blind.seen)
    assert blind.training  # the previous mode comes back
    assert evaluate(aware, loader, [SegMIOU(class_num=4)])["miou"] == pytest.approx(1.0)
    assert forward_test_inputs(aware, ["image", "segments", "image_meta"], ["segments"]) == ["image", "segments"]


def test_user_metric_gets_per_sample_lists(tiny_seg_cfg: dict) -> None:
    seen: dict[str, Any] = {}

    class CallOnly:
        def keys(self) -> dict[str, list[str]]:
            return {"pred": ["pred_segments"], "gt": ["segments"]}

        def __call__(self, preds: list[dict], gts: list[dict]) -> dict[str, float]:
            seen.update(n=len(preds), pred_shape=preds[0]["pred_segments"].shape, gt_shape=gts[0]["segments"].shape)
            return {"miou": 0.25, "extra": np.float32(2.0)}

    loader = build_dataloader(build_dataset(tiny_seg_cfg["data"]["val"], "data.val"), samples_per_gpu=3)
    result = evaluate(GtBlind(), loader, [CallOnly()])
    assert seen == {"n": 4, "pred_shape": (32, 32), "gt_shape": (1, 32, 32)}
    assert result == {"miou": 0.25, "extra": 2.0}

"""SegMIOU: confusion matrix, formulas, streaming vs per-sample call, seed contract."""
from __future__ import annotations

import math

import numpy as np
import pytest

from antgo.metrics import SegMIOU, build_metrics
from antgo.registry import MEASURES, METRICS


def small_example():
    # 4 classes; class 3 appears in neither gt nor pred; one pixel ignored (255)
    gt = np.array([[0, 0, 1, 1],
                   [0, 2, 2, 255]], dtype=np.uint8)
    pred = np.array([[0, 1, 1, 1],
                     [0, 2, 0, 0]], dtype=np.int64)
    return pred, gt


def test_confusion_matrix_by_hand():
    pred, gt = small_example()
    metric = SegMIOU(class_num=4)
    result = metric([{"pred_segments": pred}], [{"segments": gt[None]}])  # gt with a channel axis
    expected = np.zeros((4, 4), dtype=np.int64)
    # rows = ground truth, columns = prediction
    expected[0, 0] = 2
    expected[0, 1] = 1
    expected[1, 1] = 2
    expected[2, 2] = 1
    expected[2, 0] = 1
    np.testing.assert_array_equal(metric.confusion_matrix, expected)
    assert metric.confusion_matrix.dtype == np.int64
    iou0 = 2 / (3 + 3 - 2)
    iou1 = 2 / (2 + 3 - 2)
    iou2 = 1 / (2 + 1 - 1)
    assert result["iou_0"] == pytest.approx(iou0)
    assert result["iou_1"] == pytest.approx(iou1)
    assert result["iou_2"] == pytest.approx(iou2)
    assert math.isnan(result["iou_3"])  # absent from both: excluded from the mean
    assert result["miou"] == pytest.approx((iou0 + iou1 + iou2) / 3)
    assert result["pixel_acc"] == pytest.approx(5 / 7)
    assert result["macc"] == pytest.approx((2 / 3 + 1 + 1 / 2) / 3)


def test_class_names_and_out_of_range_prediction():
    metric = SegMIOU(class_num=2, class_names=["bg", "fg"])
    metric.update({"pred_segments": np.array([[[0, 7]]])}, {"segments": np.array([[[0, 1]]])})
    result = metric.compute()
    assert set(result) >= {"iou_bg", "iou_fg"}
    assert metric.confusion_matrix.sum() == 1  # the invalid prediction is not counted as any class


def test_streaming_equals_per_sample_call():
    rng = np.random.default_rng(0)
    preds = rng.integers(0, 5, size=(6, 16, 16))
    gts = rng.integers(0, 5, size=(6, 1, 16, 16)).astype(np.uint8)
    gts[gts == 4] = 255
    one_shot = SegMIOU(class_num=5)
    expected = one_shot([{"pred_segments": p} for p in preds], [{"segments": g} for g in gts])
    streaming = SegMIOU(class_num=5)
    streaming.reset()
    for i in range(0, 6, 4):  # batches of 4 and 2
        streaming.update({"pred_segments": preds[i:i + 4]}, {"segments": gts[i:i + 4]})
    assert streaming.compute() == pytest.approx(expected, nan_ok=True)
    np.testing.assert_array_equal(streaming.confusion_matrix, one_shot.confusion_matrix)
    # __call__ resets: calling twice gives the same answer
    again = one_shot([{"pred_segments": p} for p in preds], [{"segments": g} for g in gts])
    assert again == pytest.approx(expected, nan_ok=True)


def test_shape_mismatch_names_both_shapes():
    metric = SegMIOU(class_num=3)
    with pytest.raises(ValueError, match=r"\(1, 4, 4\).*\(1, 5, 5\)"):
        metric.update({"pred_segments": np.zeros((1, 4, 4))}, {"segments": np.zeros((1, 1, 5, 5))})


def test_empty_and_all_ignored():
    metric = SegMIOU(class_num=3)
    metric.update({"pred_segments": np.zeros((1, 2, 2))}, {"segments": np.full((1, 2, 2), 255)})
    assert metric.compute()["miou"] == 0.0


def test_seed_contract_and_registry():
    """The design document's sample: keys() + __call__(preds, gts) with per-sample dicts."""
    metric = MEASURES.build(dict(type="SegMIOU", class_num=21))
    assert METRICS is MEASURES
    assert metric.keys() == {"pred": ["pred_segments"], "gt": ["segments"]}
    rng = np.random.default_rng(1)
    preds = [{"pred_segments": rng.integers(0, 21, (8, 8))} for _ in range(3)]
    gts = [{"segments": rng.integers(0, 21, (1, 8, 8)).astype(np.uint8)} for _ in range(3)]
    result = metric(preds, gts)
    assert isinstance(result["miou"], float) and 0.0 <= result["miou"] <= 1.0


def test_build_metrics_dict_and_list():
    cfg = dict(type="SegMIOU", class_num=3)
    [single] = build_metrics(cfg)
    assert isinstance(single, SegMIOU) and cfg == dict(type="SegMIOU", class_num=3)
    both = build_metrics([cfg, dict(type="Accuracy", topk=(1, 2))])
    assert [type(m).__name__ for m in both] == ["SegMIOU", "Accuracy"]
    assert build_metrics(None) == []
    with pytest.raises(KeyError, match="evaluation.metric"):
        build_metrics(dict(type="SegMIoU_typo", class_num=3))


def test_out_of_range_prediction_counts_as_a_miss_of_its_gt_class():
    metric = SegMIOU(class_num=2)
    metric.update({"pred_segments": np.array([[[0, 7]]])}, {"segments": np.array([[[0, 1]]])})
    result = metric.compute()
    assert result["iou_1"] == 0.0  # class 1 is in the ground truth and was never predicted
    assert result["miou"] == pytest.approx(0.5)
    assert result["pixel_acc"] == pytest.approx(0.5)
    assert result["macc"] == pytest.approx(0.5)
    metric.reset()
    assert metric.compute()["pixel_acc"] == 0.0


def test_the_matrix_is_counted_with_gt_and_predictions_of_any_value():
    """Labels outside the class range (negative, 255, above) and ignored pixels are left out exactly."""
    import torch

    rng = np.random.default_rng(5)
    gt = rng.integers(-2, 7, size=(3, 17, 19))
    gt[0, :4] = 255
    pred = rng.integers(-1, 6, size=gt.shape)
    metric = SegMIOU(class_num=4)
    metric.update({"pred_segments": torch.from_numpy(pred)}, {"segments": torch.from_numpy(gt)})
    keep = (gt >= 0) & (gt < 4)
    expected = np.zeros((4, 5), np.int64)
    np.add.at(expected, (gt[keep], np.where((pred[keep] >= 0) & (pred[keep] < 4), pred[keep], 4)), 1)
    assert np.array_equal(metric._counts.cpu().numpy(), expected)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_update_on_cuda_never_waits_for_the_device():
    import torch

    metric = SegMIOU(class_num=21)
    pred = torch.randint(0, 21, (8, 64, 64), device="cuda")
    gt = torch.randint(0, 22, (8, 64, 64), device="cuda")
    metric.update({"pred_segments": pred}, {"segments": gt})  # first call: the matrix moves to the device
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        metric.update({"pred_segments": pred}, {"segments": gt})
    finally:
        torch.cuda.set_sync_debug_mode(0)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "antgo.metrics.segmentation"]


def test_ground_truth_outside_the_classes_warns_once_with_the_count(caplog):
    gt = np.zeros((2, 4, 4), np.uint8)
    gt[:, 2:] = [1], [2]
    gt[0, 0, :3] = 7  # label 7 with 3 classes: not a class, not the ignore value
    gt[1, 0, 0] = 255
    pred = np.where(gt < 3, gt, 0).astype(np.int64)
    metric = SegMIOU(class_num=3)
    with caplog.at_level("WARNING", logger="antgo.metrics.segmentation"):
        for i in range(2):  # two batches, one warning: compute() reads the counts once
            metric.update({"pred_segments": pred[i:i + 1]}, {"segments": gt[i:i + 1]})
        result = metric.compute()
    [message] = _warnings(caplog)
    assert "3 ground-truth pixels (9.4%) have values outside 0..2 that are not the ignore value 255" in message
    assert "class_num (now 3)" in message
    assert result["pixel_acc"] == 1.0 and metric.confusion_matrix.sum() == 28  # the numbers are unchanged
    metric.reset()
    caplog.clear()
    metric.update({"pred_segments": pred}, {"segments": pred.astype(np.uint8)})
    metric.compute()
    assert not _warnings(caplog)  # reset() clears the counts


@pytest.mark.parametrize("foreground", [0.4, 0.1])
def test_binary_0_255_masks_warn_that_255_hides_a_class(caplog, foreground):
    gt = np.zeros((1, 10, 10), np.uint8)
    gt[0, :int(10 * foreground)] = 255  # 'fg' saved as 255: every foreground pixel is ignored
    metric = SegMIOU(class_num=2, class_names=["background", "fg"])
    with caplog.at_level("WARNING", logger="antgo.metrics.segmentation"):
        result = metric([{"pred_segments": np.zeros((10, 10), np.int64)}], [{"segments": gt[0]}])
    assert result["miou"] == 1.0 and math.isnan(result["iou_fg"])  # what the user saw: the numbers stay
    [message] = _warnings(caplog)
    assert f"classes ['fg'] have no ground-truth pixels while the ignore value 255 covers {foreground:.0%}" in message
    assert "255 -> 1" in message


def test_ordinary_void_borders_do_not_warn(caplog):
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 4, size=(2, 16, 16)).astype(np.uint8)
    gt[:, 0] = 255  # a void band of 1/16 of the pixels, every class present
    small = gt.copy()
    small[small == 3] = 0  # a class absent from a small validation set, little void: no warning either
    metric = SegMIOU(class_num=4)
    with caplog.at_level("WARNING", logger="antgo.metrics.segmentation"):
        for masks in (gt, small):
            metric.reset()
            metric.update({"pred_segments": masks.astype(np.int64)}, {"segments": masks})
            metric.compute()
    assert not _warnings(caplog)

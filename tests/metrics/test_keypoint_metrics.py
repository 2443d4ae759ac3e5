"""KeypointAP against pycocotools (OKS, visibility) and PCK by hand."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from antgo.metrics import PCK, KeypointAP

TOL = 1e-6
SIGMAS = [0.05] * 4
GT = np.array([[[10., 10, 2], [50, 10, 2], [50, 50, 2], [10, 50, 0]]])  # the last keypoint is not labelled
BOX = np.array([[0., 0, 60, 60]])


def _oks(pred: np.ndarray, gt: np.ndarray, area: float) -> float:
    vis = gt[:, 2] > 0
    d2 = ((pred[:, :2] - gt[:, :2]) ** 2).sum(1)[vis]
    return float(np.exp(-d2 / (2 * area * (2 * 0.05) ** 2)).mean())


def _reference(tmp_path: Path, gt: np.ndarray, box: np.ndarray, preds: np.ndarray) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    anns = [{"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "num_keypoints": int((g[:, 2] > 0).sum()),
             "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": float((b[2] - b[0]) * (b[3] - b[1])),
             "keypoints": g.reshape(-1).tolist()} for i, (g, b) in enumerate(zip(gt, box))]
    dets = [{"image_id": 1, "category_id": 1, "score": float(p[:, 2].mean()),
             "keypoints": np.concatenate([p[:, :2], np.ones((len(p), 1))], 1).reshape(-1).tolist()} for p in preds]
    (tmp_path / "gt.json").write_text(json.dumps({"images": [{"id": 1}], "annotations": anns,
                                                  "categories": [{"id": 1, "name": "shape"}]}))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "gt.json"))
        ev = COCOeval(coco, coco.loadRes(str(tmp_path / "dt.json")), "keypoints")
        ev.params.kpt_oks_sigmas = np.array(SIGMAS)
        ev.evaluate(), ev.accumulate(), ev.summarize()
    return ev.stats


def _ours(preds: np.ndarray, metric_cls=KeypointAP, **kw) -> dict[str, float]:
    metric = metric_cls(**kw)
    metric.update({"pred_joints2d": [preds]}, {"joints2d": [GT], "bboxes": [BOX]})
    return metric.compute()


def _pred(shift: float, hidden_shift: float = 0.0) -> np.ndarray:
    p = GT.copy()
    p[0, :3, 0] += shift
    p[0, 3, :2] += hidden_shift
    p[..., 2] = 0.9
    return p


@pytest.mark.parametrize("shift,hidden", [(0.0, 0.0), (0.0, 40.0), (3.0, 0.0), (5.0, 0.0), (12.0, 0.0)])
def test_oks_ap_matches_pycocotools_and_hand_oks(shift: float, hidden: float, tmp_path: Path) -> None:
    pred = _pred(shift, hidden)
    ours = _ours(pred, sigmas=SIGMAS)
    ref = _reference(tmp_path, GT, BOX, pred)
    for key, idx in (("kp_AP", 0), ("kp_AP_50", 1), ("kp_AP_75", 2), ("kp_AR", 5)):
        assert ours[key] == pytest.approx(max(ref[idx], 0.0), abs=TOL), key
    # a single instance: AP at threshold t is 1 when OKS >= t, so AP@[.5:.95] = fraction of thresholds passed
    oks = _oks(pred[0], GT[0], 3600.0)
    thresholds = np.linspace(0.5, 0.95, 10)
    assert ours["kp_AP"] == pytest.approx((oks >= thresholds - 1e-12).mean(), abs=TOL)


def test_unlabelled_keypoint_does_not_count() -> None:
    # the unlabelled 4th keypoint is far off: OKS and PCK still perfect
    assert _ours(_pred(0.0, 40.0), sigmas=SIGMAS)["kp_AP"] == pytest.approx(1.0)
    assert _ours(_pred(0.0, 40.0), PCK, thr=0.1)["pck"] == pytest.approx(1.0)


def test_pck_threshold_relative_to_box() -> None:
    # box side 60, thr 0.1 → 6 px: a 5 px shift is correct, 7 px is not
    assert _ours(_pred(5.0), PCK, thr=0.1)["pck"] == pytest.approx(1.0)
    out = _ours(_pred(7.0), PCK, thr=0.1)
    assert out["pck"] == 0.0 and out["mean_dist_px"] == pytest.approx(7.0)
    assert np.isnan(out["pck_3"])


def test_pck_matches_instances_and_counts_missing_predictions() -> None:
    gt = np.concatenate([GT, GT + np.array([100., 0, 0])])
    boxes = np.concatenate([BOX, BOX + np.array([100., 0, 100, 0])])
    pred = np.concatenate([_pred(0.0) + np.array([100., 0, 0]), _pred(1.0)])  # order swapped
    metric = PCK(thr=0.1)
    metric.update({"pred_joints2d": [pred]}, {"joints2d": [gt], "bboxes": [boxes]})
    assert metric.compute()["pck"] == pytest.approx(1.0)
    metric.reset()
    metric.update({"pred_joints2d": [pred[:1]]}, {"joints2d": [gt], "bboxes": [boxes]})
    assert metric.compute()["pck"] == pytest.approx(0.5)


def test_call_contract_and_bad_input() -> None:
    metric = KeypointAP(sigmas=SIGMAS)
    assert metric.keys() == {"pred": ["pred_joints2d"], "gt": ["joints2d", "bboxes"]}
    assert metric([{"pred_joints2d": _pred(0.0)}], [{"joints2d": GT, "bboxes": BOX}])["kp_AP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="sigmas"):
        KeypointAP(sigmas=[0.05] * 3)([{"pred_joints2d": _pred(0.0)}], [{"joints2d": GT, "bboxes": BOX}])

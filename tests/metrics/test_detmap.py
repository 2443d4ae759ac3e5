"""DetMAP against pycocotools run from COCO JSON files, on hand-built cases with known answers."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from antgo.metrics import DetMAP
from antgo.metrics.detection import voc_ap

TOL = 1e-6
R101 = 51 / 101  # COCO's 101-point recall grid: precision 1 up to recall 0.5, then 0


def _reference(tmp_path: Path, images: list[dict]) -> np.ndarray:
    """pycocotools on JSON files (the way users run it), independent of DetMAP's in-memory path."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    anns, dets, cats = [], [], set()
    for image_id, img in enumerate(images, 1):
        for k, (box, cat) in enumerate(zip(img["bboxes"], img["labels"])):
            x1, y1, x2, y2 = box
            crowd = int(img.get("iscrowd", [0] * len(img["labels"]))[k])
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": int(cat), "iscrowd": crowd,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
            cats.add(int(cat))
        for box, score, cat in zip(img["box"], img["score"], img["label"]):
            x1, y1, x2, y2 = box
            dets.append({"image_id": image_id, "category_id": int(cat), "score": score,
                         "bbox": [x1, y1, x2 - x1, y2 - y1]})
    gt_file, dt_file = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_file.write_text(json.dumps({"images": [{"id": i + 1} for i in range(len(images))], "annotations": anns,
                                   "categories": [{"id": c, "name": str(c)} for c in sorted(cats)]}))
    dt_file.write_text(json.dumps(dets))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        ev = COCOeval(gt, gt.loadRes(str(dt_file)), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    return ev.stats


def _ours(images: list[dict], **kwargs) -> dict[str, float]:
    metric = DetMAP(**kwargs)
    metric.reset()
    for img in images:  # one update per image, batch of one, per-sample lists as the collate gives them
        gts = {"bboxes": [np.array(img["bboxes"], float)], "labels": [np.array(img["labels"])]}
        if "iscrowd" in img:
            gts["iscrowd"] = [np.array(img["iscrowd"])]
        metric.update({"box": [np.array(img["box"], float).reshape(-1, 4)], "score": [np.array(img["score"])],
                       "label": [np.array(img["label"])]}, gts)
    return metric.compute()


GT2 = dict(bboxes=[[10, 10, 50, 50], [60, 20, 90, 80]], labels=[0, 1])
CASES = {
    # name: (images, expected mAP, mAP_50, mAP_75)
    "perfect": ([dict(GT2, box=GT2["bboxes"], score=[0.9, 0.8], label=[0, 1])], 1.0, 1.0, 1.0),
    # IoU 0.8 with the box shifted by 4 px: a hit at IoU thresholds 0.50 ... 0.80 (7 of 10)
    "shifted": ([dict(bboxes=[[0, 0, 36, 40]], labels=[0], box=[[4, 0, 40, 40]], score=[0.9], label=[0])],
                0.7, 1.0, 1.0),
    # one of two boxes of a class missed: recall 0.5 at precision 1
    "missed": ([dict(bboxes=[[10, 10, 50, 50], [60, 20, 90, 80]], labels=[0, 0], box=[[10, 10, 50, 50]],
                     score=[0.9], label=[0])], R101, R101, R101),
    # a lower-scored duplicate of a hit is a false positive after the last recall point: AP stays 1
    "duplicate": ([dict(GT2, box=GT2["bboxes"] + [[11, 11, 50, 50]], score=[0.9, 0.8, 0.3], label=[0, 1, 0])],
                  1.0, 1.0, 1.0),
    # a higher-scored false positive first: precision 1/2 at recall 1
    "false_positive_first": ([dict(bboxes=[[0, 0, 20, 20]], labels=[0], box=[[50, 50, 70, 70], [0, 0, 20, 20]],
                                   score=[0.9, 0.5], label=[0, 0])], 0.5, 0.5, 0.5),
    # a detection inside a crowd region is ignored (neither hit nor false positive)
    "crowd": ([dict(bboxes=[[0, 0, 20, 20], [40, 40, 100, 100]], labels=[0, 0], iscrowd=[0, 1],
                    box=[[50, 50, 70, 70], [0, 0, 20, 20]], score=[0.9, 0.5], label=[0, 0])], 1.0, 1.0, 1.0),
    "wrong_class": ([dict(bboxes=[[0, 0, 20, 20]], labels=[0], box=[[0, 0, 20, 20]], score=[0.9], label=[1])],
                    0.0, 0.0, 0.0),
}


@pytest.mark.parametrize("name", list(CASES))
def test_known_answers_and_pycocotools_agree(name: str, tmp_path: Path) -> None:
    images, want_map, want_50, want_75 = CASES[name]
    ours = _ours(images, ignore_key="iscrowd" if any("iscrowd" in i for i in images) else None)
    ref = _reference(tmp_path, images)
    for key, idx, want in (("mAP", 0, want_map), ("mAP_50", 1, want_50), ("mAP_75", 2, want_75)):
        assert ours[key] == pytest.approx(max(ref[idx], 0.0) if ref[idx] >= 0 or idx < 3 else np.nan, abs=TOL,
                                          nan_ok=True), key
        assert ours[key] == pytest.approx(want, abs=TOL), key
    assert ours["AR_100"] == pytest.approx(max(ref[8], 0.0), abs=TOL)


def test_random_scenes_match_pycocotools(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    images = []
    for _ in range(12):
        n = int(rng.integers(0, 5))
        xy = rng.uniform(0, 80, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(8, 40, (n, 2))], 1)
        labels = rng.integers(0, 3, n)
        dets = boxes + rng.normal(0, 3, boxes.shape)
        extra = rng.uniform(0, 100, (2, 2))
        dets = np.concatenate([dets, np.concatenate([extra, extra + 15], 1)]) if n else np.concatenate([extra, extra + 15], 1)
        images.append(dict(bboxes=boxes.tolist(), labels=labels.tolist(), box=dets.tolist(),
                           score=rng.uniform(0, 1, len(dets)).tolist(),
                           label=np.concatenate([labels, rng.integers(0, 3, 2)]).tolist()))
    ours, ref = _ours(images), _reference(tmp_path, images)
    for key, idx in (("mAP", 0), ("mAP_50", 1), ("mAP_75", 2), ("mAP_s", 3), ("mAP_m", 4), ("AR_100", 8)):
        assert ours[key] == pytest.approx(max(ref[idx], 0.0) if ref[idx] >= 0 or idx < 3 else np.nan, abs=TOL,
                                          nan_ok=True), key
    assert np.nanmean([ours[f"AP_{c}"] for c in range(3)]) == pytest.approx(ref[0], abs=TOL)


def test_per_class_names_batches_and_no_detections() -> None:
    metric = DetMAP(class_num=3, class_names=["a", "b", "c"])
    gts = {"bboxes": [np.array([[0, 0, 10, 10.]]), np.zeros((0, 4))], "labels": [np.array([0]), np.zeros(0, int)]}
    metric.update({"box": [np.array([[0, 0, 10, 10.]]), np.zeros((0, 4))], "score": [np.array([0.5]), np.zeros(0)],
                   "label": [np.array([0]), np.zeros(0, int)]}, gts)
    out = metric.compute()
    assert out["AP_a"] == pytest.approx(1.0) and np.isnan(out["AP_b"]) and np.isnan(out["AP_c"])
    assert out["mAP"] == pytest.approx(1.0)
    metric.reset()
    metric.update({"box": [np.zeros((0, 4))], "score": [np.zeros(0)], "label": [np.zeros(0, int)]},
                  {"bboxes": [np.array([[0, 0, 10, 10.]])], "labels": [np.array([1])]})
    assert metric.compute()["mAP"] == 0.0


def test_design_document_call_contract() -> None:
    metric = DetMAP()
    assert metric.keys() == {"pred": ["box", "label"], "gt": ["bboxes", "labels"]}  # the document's form
    out = metric([{"box": np.array([[0, 0, 10, 10.]]), "score": np.array([0.7]), "label": np.array([2])}],
                 [{"bboxes": np.array([[0, 0, 10, 10.]]), "labels": np.array([2])}])
    assert out["mAP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no scores: return 'score'"):
        metric.update({"box": [np.zeros((0, 4))], "label": [np.zeros(0)]}, {"bboxes": [np.zeros((0, 4))],
                                                                            "labels": [np.zeros(0)]})


def test_voc_ap_with_difficult_boxes() -> None:
    # class 0: two real boxes, one difficult; detections: hit (0.9), on the difficult box (0.8), FP (0.7), hit (0.6)
    images = [dict(bboxes=[[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], labels=[0, 0, 0],
                   iscrowd=[0, 0, 1], box=[[0, 0, 10, 10], [50, 50, 60, 60], [80, 80, 90, 90], [20, 20, 30, 30]],
                   score=[0.9, 0.8, 0.7, 0.6], label=[0, 0, 0, 0])]
    out = _ours(images, ignore_key="iscrowd", voc=True)
    # ranks after dropping the difficult match: TP, FP, TP → recall (0.5, 0.5, 1), precision (1, 1/2, 2/3)
    assert out["voc_mAP_50"] == pytest.approx(0.5 * 1 + 0.5 * (2 / 3), abs=TOL)
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(0.75)


def test_area_key_sets_the_coco_size_range() -> None:
    # a 40x40 box (medium by box area) whose annotated segment area is 100 px (small): COCO ranks it small
    metric = DetMAP(area_key="areas")
    assert metric.keys()["gt"] == ["bboxes", "labels", "areas"]
    metric.update({"box": [np.array([[0, 0, 40, 40.]])], "score": [np.array([0.9])], "label": [np.array([0])]},
                  {"bboxes": [np.array([[0, 0, 40, 40.]])], "labels": [np.array([0])], "areas": [np.array([100.])]})
    out = metric.compute()
    assert out["mAP_s"] == pytest.approx(1.0)
    assert np.isnan(out["mAP_m"]) and np.isnan(out["mAP_l"])  # no ground truth there: not a score of 0


def test_pascal_reader_ground_truth_as_predictions_scores_one(tmp_path: Path) -> None:
    """Through the real Pascal2012 DETECTION reader: its own boxes (difficult ones ignored) give AP 1 both ways."""
    from antgo.data import build_dataset
    from antgo.data.collate import collate
    from antgo.data.datasets.synthetic_tasks import make_voc_det_tree

    root = make_voc_det_tree(tmp_path / "voc", splits={"val": 6}, difficult_fraction=0.3)
    reader = build_dataset(dict(type="Pascal2012", train_or_test="val", dir=str(root),
                                ext_params=dict(task_type="DETECTION"),
                                inputs_def=dict(fields=["bboxes", "labels", "difficult"])), "data.val")
    metric = DetMAP(class_num=4, ignore_key="difficult", voc=True)
    batch = collate([reader[i] for i in range(len(reader))])
    assert any(bool(d.any()) for d in batch["difficult"])
    metric.update({"box": batch["bboxes"], "score": [np.ones(len(b)) for b in batch["bboxes"]],
                   "label": batch["labels"]}, batch)
    out = metric.compute()
    assert out["voc_mAP_50"] == pytest.approx(1.0) and out["mAP"] == pytest.approx(1.0)


def _document_form(images: list[dict], **kwargs) -> dict[str, float]:
    """The design document's {'box', 'label'}: (N, 5) boxes whose 5th column is the score, no 'score' key."""
    metric = DetMAP(**kwargs)
    for img in images:
        gts = {"bboxes": [np.array(img["bboxes"], float)], "labels": [np.array(img["labels"])]}
        if "iscrowd" in img:
            gts["iscrowd"] = [np.array(img["iscrowd"])]
        boxes = np.concatenate([np.array(img["box"], float).reshape(-1, 4), np.array(img["score"])[:, None]], 1)
        metric.update({"box": [boxes], "label": [np.array(img["label"])]}, gts)
    return metric.compute()


@pytest.mark.parametrize("name", list(CASES))
def test_document_box_form_gives_the_same_numbers(name: str) -> None:
    images = CASES[name][0]
    ignore = "iscrowd" if any("iscrowd" in i for i in images) else None
    assert _document_form(images, ignore_key=ignore) == pytest.approx(_ours(images, ignore_key=ignore), nan_ok=True)


def test_pred_keys_name_two_or_three_predictions() -> None:
    three = DetMAP(pred_keys=("boxes", "scores", "classes"))
    assert three.keys()["pred"] == ["boxes", "scores", "classes"]
    gts = {"bboxes": [np.array([[0, 0, 10, 10.]])], "labels": [np.array([1])]}
    three.update({"boxes": [np.array([[0, 0, 10, 10.]])], "scores": [np.array([0.4])],
                  "classes": [np.array([1])]}, gts)
    assert three.compute()["mAP"] == pytest.approx(1.0)
    batch = DetMAP(pred_keys=("boxes", "classes"))  # batch-first arrays (B, N, 5) work as well as lists
    batch.update({"boxes": np.array([[[0, 0, 10, 10, 0.4]]]), "classes": np.array([[1]])}, gts)
    assert batch.compute()["mAP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"pred_keys names \(boxes, labels\) or \(boxes, scores, labels\)"):
        DetMAP(pred_keys=("box",))
    with pytest.raises(ValueError, match=r"'box' has shape \(1, 6\)"):
        DetMAP().update({"box": [np.zeros((1, 6))], "label": [np.zeros(1)]}, gts)

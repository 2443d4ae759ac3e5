"""Demo sets for detection, keypoints and classification: deterministic, idempotent, annotations on the shapes."""
import json

import cv2
import numpy as np
import pytest

from antgo.data.datasets import COCO2017, ImageFolder
from antgo.data.datasets.synthetic import main as synthetic_cli
from antgo.data.datasets.synthetic_tasks import (COUNTS, MANIFEST, SHAPE_CLASS_NAMES, make_demo, make_demo_cls,
                                                 make_demo_det, make_demo_kp, render_kp_sample)

SMALL = {"train": 12, "val": 4}


def files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


@pytest.mark.parametrize("maker", [make_demo_det, make_demo_kp, make_demo_cls])
def test_deterministic_and_idempotent(tmp_path, maker):
    a, b = maker(tmp_path / "a", counts=SMALL), maker(tmp_path / "b", counts=SMALL)
    assert files(a) == files(b) and files(a) != files(maker(tmp_path / "c", seed=1, counts=SMALL))
    manifest = json.loads((a / MANIFEST).read_text())
    assert manifest["counts"] == SMALL and manifest["seed"] == 0
    victim = sorted(p for p in a.rglob("*.jpg"))[3]
    stamp = victim.stat().st_mtime_ns
    maker(a, counts=SMALL)
    assert victim.stat().st_mtime_ns == stamp  # complete: not written again
    victim.unlink()
    maker(a, counts=SMALL)
    assert victim.is_file() and files(a) == files(b)  # damaged: regenerated identically


def saturation(image):
    return cv2.cvtColor(image, cv2.COLOR_RGB2HSV)[..., 1].astype(float)


def test_det_boxes_enclose_the_drawn_shapes(tmp_path):
    ds = COCO2017("train", make_demo_det(tmp_path, counts={"train": 40}))
    counts, labels = [], []
    for i in range(len(ds)):
        s = ds.sample(i)
        sat = saturation(s["image"])
        counts.append(len(s["bboxes"]))
        labels += s["labels"].tolist()
        inside = np.zeros(sat.shape, bool)
        for x1, y1, x2, y2 in s["bboxes"].astype(int):
            inside[y1:y2, x1:x2] = True
            assert sat[y1:y2, x1:x2].max() > 110  # a saturated shape inside every box
        if inside.any():
            assert np.median(sat[inside]) > np.median(sat[~inside]) + 30  # the background is pale
    assert max(counts) >= 3 and min(counts) <= 1 and set(labels) == set(range(len(SHAPE_CLASS_NAMES)))


def test_kp_corners_land_on_the_house_and_occlusion_sets_visibility():
    occluded = 0
    for k in range(40):
        image, houses = render_kp_sample(np.random.default_rng([0, k]))
        assert len(houses) == 1
        whole, visible, keypoints = houses[0]
        h, w = whole.shape
        assert (visible <= whole).all() and visible.sum() > 0.5 * whole.sum()
        for x, y, v in keypoints:
            assert 0 <= x <= w - 1 and 0 <= y <= h - 1 and v in (1, 2)
            px = int(round(y)), int(round(x))
            assert whole[px] and visible[px] == (v == 2)  # corners of the house; hidden ones under a distractor
            occluded += v == 1
    assert occluded >= 1


def test_kp_and_cls_trees_read_back(tmp_path):
    kp = COCO2017("val", make_demo_kp(tmp_path / "kp", counts={"val": 5}), dict(task_type="KEYPOINTS"))
    data = json.loads((tmp_path / "kp/annotations/person_keypoints_val2017.json").read_text())
    assert data["categories"][0]["skeleton"] and data["annotations"][0]["num_keypoints"] >= 4
    for i in range(5):
        s = kp.sample(i)
        x1, y1, x2, y2 = s["bboxes"][0]
        j = s["joints2d"][0]
        assert (j[:, 0] >= x1 - 1).all() and (j[:, 0] <= x2).all() and (j[:, 1] >= y1 - 1).all()
    cls = ImageFolder("train", make_demo_cls(tmp_path / "cls", counts={"train": 8}))
    assert sorted(cls.sample(i)["label"] for i in range(8)) == [0, 0, 1, 1, 2, 2, 3, 3]
    for i in range(8):
        h, w = cls.sample(i)["image"].shape[:2]
        assert 96 <= h <= 128 and 96 <= w <= 128


def test_default_sizes_and_make_demo_dispatch(tmp_path):
    assert all(300 <= sum(c.values()) <= 600 for c in COUNTS.values())
    with pytest.raises(ValueError, match="unknown demo task 'seg2'"):
        make_demo("seg2", tmp_path)
    with pytest.raises(ValueError, match="unknown splits \\['dev'\\]"):
        make_demo_det(tmp_path, counts={"dev": 1})


def test_cli_writes_a_task_demo(tmp_path):
    # in-process (the subprocess form of the same entry point is tested with the VOC tree)
    assert synthetic_cli(["demo", str(tmp_path), "--task", "det"]) == 0
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["task"] == "det" and manifest["counts"] == COUNTS["det"] and manifest["seconds"] < 30
    assert len(COCO2017("val", tmp_path)) == COUNTS["det"]["val"]

"""COCO2017 on generated COCO trees: fields, category mapping, crowd, keypoints, and bad input."""
import json

import numpy as np
import pytest

from antgo.data import build_dataloader, build_dataset
from antgo.data.datasets import COCO2017
from antgo.data.datasets._voc_writer import write_rgb_jpeg
from antgo.data.datasets.synthetic_tasks import FLIP_PAIRS, KEYPOINT_NAMES, make_demo_det, make_demo_kp
from antgo.registry import DATASETS


def coco_tree(root, anns, images=None, categories=None, split="val", task="DETECTION", write_images=True):
    """A hand-built COCO tree: two 20x30 images (ids 5 and 9), categories with ids 3 and 7."""
    images = images if images is not None else [{"id": 5, "file_name": "a.jpg", "height": 20, "width": 30},
                                                 {"id": 9, "file_name": "b.jpg", "height": 20, "width": 30}]
    categories = categories if categories is not None else [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]
    (root / f"{split}2017").mkdir(parents=True, exist_ok=True)
    if write_images:
        for im in images:
            write_rgb_jpeg(root / f"{split}2017" / im["file_name"], np.zeros((im["height"], im["width"], 3), np.uint8))
    name = "instances" if task == "DETECTION" else "person_keypoints"
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / f"{name}_{split}2017.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return root


def ann(i, image_id, cat, bbox, **kw):
    area = bbox[2] * bbox[3] if len(bbox) == 4 else 0
    return {"id": i, "image_id": image_id, "category_id": cat, "bbox": bbox, "area": area, **kw}


def test_detection_fields_labels_and_crowd(tmp_path):
    root = coco_tree(tmp_path, [ann(1, 9, 7, [1, 2, 10, 5]), ann(2, 9, 3, [0, 0, 4, 4], iscrowd=1, area=7.0),
                                ann(3, 9, 3, [5, 5, 0, 3])])  # zero width: skipped
    ds = COCO2017("val", root, dict(task_type="DETECTION"))
    assert len(ds) == 2 and ds.class_names == ("cat", "dog") and ds.cat_ids == (3, 7)
    empty, s = ds.sample(0), ds.sample(1)
    assert set(s) == {"image", "bboxes", "labels", "iscrowd", "areas", "image_meta"}
    assert s["image"].shape == (20, 30, 3) and s["image"].dtype == np.uint8
    np.testing.assert_array_equal(s["bboxes"], [[1, 2, 11, 7], [0, 0, 4, 4]])
    assert s["bboxes"].dtype == np.float32 and s["labels"].dtype == np.int64
    assert s["labels"].tolist() == [1, 0] and s["iscrowd"].tolist() == [False, True]
    np.testing.assert_array_equal(s["areas"], [50, 7])  # the annotation's area, as COCO eval uses
    assert s["image_meta"]["id"] == 9 and s["image_meta"]["image_file"].endswith("val2017/b.jpg")
    assert empty["bboxes"].shape == (0, 4) and empty["labels"].shape == (0,) and empty["image_meta"]["id"] == 5
    no_crowd = COCO2017("val", root, dict(skip_crowd=True, skip_empty=True))
    assert len(no_crowd) == 1 and no_crowd.sample(0)["iscrowd"].tolist() == [False]


def test_keypoints_fields_and_flip_pairs(tmp_path):
    cats = [{"id": 1, "name": "person", "keypoints": ["nose", "left_eye", "right_eye"], "skeleton": [[1, 2], [1, 3]]},
            {"id": 2, "name": "car"}]
    root = coco_tree(tmp_path, [ann(1, 5, 1, [2, 2, 10, 10], keypoints=[3, 4, 2, 0, 0, 0, 5.5, 6, 1],
                                    num_keypoints=2),
                                ann(2, 5, 2, [0, 0, 5, 5]),  # a category without keypoints: not an instance here
                                ann(3, 5, 1, [1, 1, 3, 3], num_keypoints=0)],  # no keypoints given: all v=0
                     categories=cats, split="train", task="KEYPOINTS")
    ds = COCO2017("train", root, dict(task_type="KEYPOINTS"))
    assert ds.class_names == ("person",) and ds.keypoint_names == ["nose", "left_eye", "right_eye"]
    assert ds.flip_pairs == [[1], [2]] and ds.skeleton == [[1, 2], [1, 3]]
    s = ds.sample(0)
    assert s["joints2d"].shape == (2, 3, 3) and s["joints2d"].dtype == np.float32
    np.testing.assert_array_equal(s["joints2d"][0], [[3, 4, 2], [0, 0, 0], [5.5, 6, 1]])
    assert (s["joints2d"][1] == 0).all() and s["bboxes"].shape == (2, 4)
    assert ds.sample(1)["joints2d"].shape == (0, 3, 3)


def test_demo_trees_through_the_builder_and_loader(tmp_path):
    root = make_demo_det(tmp_path / "det", counts={"train": 6})
    reader = build_dataset(dict(type="COCO2017", train_or_test="train", dir=str(root),
                                ext_params=dict(task_type="DETECTION"),
                                pipeline=[dict(type="ResizeS", target_dim=(64, 64)), dict(type="ToTensor")]))
    batch = next(iter(build_dataloader(reader, samples_per_gpu=6)))
    assert batch["image"].shape == (6, 3, 64, 64) and len(batch["bboxes"]) == 6
    assert sum(len(b) for b in batch["bboxes"]) > 6 and all(b.shape[1:] == (4,) for b in batch["bboxes"])
    assert all(float(b.max()) <= 64 for b in batch["bboxes"] if len(b))
    kp = COCO2017("val", make_demo_kp(tmp_path / "kp", counts={"val": 3}), dict(task_type="KEYPOINTS"))
    assert kp.keypoint_names == list(KEYPOINT_NAMES) and kp.flip_pairs == [list(p) for p in FLIP_PAIRS]
    assert kp.sample(0)["joints2d"].shape == (1, 5, 3)
    assert DATASETS.get("COCO2017") is COCO2017


def test_missing_pieces_show_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="(?s)does not exist.*Expected layout.*instances_"):
        COCO2017("train", tmp_path / "nope")
    (tmp_path / "annotations").mkdir()
    with pytest.raises(FileNotFoundError, match="person_keypoints_val2017.json does not exist"):
        COCO2017("val", tmp_path, dict(task_type="KEYPOINTS"))
    (tmp_path / "annotations" / "instances_val2017.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="image folder .*val2017 does not exist"):
        COCO2017("val", tmp_path)
    with pytest.raises(FileNotFoundError, match="dir is not set"):
        COCO2017("val", None)
    with pytest.raises(NotImplementedError, match="SEGMENTATION.*DETECTION"):
        COCO2017("val", tmp_path, dict(task_type="SEGMENTATION"))
    with pytest.raises(ValueError, match="train_or_test"):
        COCO2017("test", tmp_path)
    with pytest.raises(ValueError, match="skip_crowd must be True or False"):
        COCO2017("val", tmp_path, dict(skip_crowd="False"))


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.pop("categories"), "no list \\['categories'\\]"),
    (lambda d: d["annotations"].append(ann(8, 42, 3, [0, 0, 1, 1])), "annotations\\[1\\].*image_id 42"),
    (lambda d: d["annotations"].append(ann(8, 5, 4, [0, 0, 1, 1])), "annotations\\[1\\] has category_id 4"),
])
def test_inconsistent_json_is_named(tmp_path, mutate, match):
    root = coco_tree(tmp_path, [ann(1, 5, 3, [0, 0, 2, 2])])
    path = root / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=match) as info:
        COCO2017("val", root)
    assert "instances_val2017.json" in str(info.value)


def test_bad_files_are_named_at_sample_time(tmp_path):
    root = coco_tree(tmp_path, [ann(1, 5, 3, [0, 0, 2]), ann(2, 9, 3, [0, 0, 2, 2], keypoints=[1, 2])],
                     write_images=False)
    ds = COCO2017("val", root)
    with pytest.raises(FileNotFoundError, match="val2017/a.jpg"):
        ds.sample(0)
    write_rgb_jpeg(root / "val2017" / "a.jpg", np.zeros((20, 30, 3), np.uint8))
    write_rgb_jpeg(root / "val2017" / "b.jpg", np.zeros((21, 30, 3), np.uint8))
    with pytest.raises(ValueError, match="annotation id 1 has bbox \\[0, 0, 2\\]"):
        ds.sample(0)
    with pytest.raises(ValueError, match="b.jpg is 30x21 but .* says 30x20"):
        ds.sample(1)
    (root / "annotations" / "instances_val2017.json").write_text("{not json")
    with pytest.raises(ValueError, match="instances_val2017.json is not valid JSON"):
        COCO2017("val", root)
    with pytest.raises(IndexError, match="out of range"):
        COCO2017("val", coco_tree(tmp_path / "ok", [])).sample(2)


def test_wrong_keypoint_count_and_no_keypoint_category(tmp_path):
    cats = [{"id": 1, "name": "person", "keypoints": ["a", "b"]}]
    root = coco_tree(tmp_path, [ann(1, 5, 1, [0, 0, 2, 2], keypoints=[1, 2, 2])], categories=cats, task="KEYPOINTS")
    with pytest.raises(ValueError, match="annotation id 1 has 3 keypoint values; expected 6"):
        COCO2017("val", root, dict(task_type="KEYPOINTS")).sample(0)
    root = coco_tree(tmp_path / "b", [], task="KEYPOINTS")
    with pytest.raises(ValueError, match="no category with 'keypoints'"):
        COCO2017("val", root, dict(task_type="KEYPOINTS"))

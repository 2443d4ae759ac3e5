"""Geometric transforms keep image, mask, boxes and joints consistent; 255 appears only where padded or rotated in."""
import numpy as np
import pytest

import antgo.data  # noqa: F401  (registers the transforms)
from antgo.registry import TRANSFORMS
from antgo.data.transforms import (CenterCrop, Pad, RandomFlipImage, RandomScaleCrop, ResizeByShort, ResizeS,
                                   Rotation)


def make_sample(h=30, w=40, seed=0):
    rng = np.random.default_rng(seed)
    seg = rng.integers(0, 5, size=(h, w)).astype(np.uint8)
    image = rng.integers(0, 256, size=(h, w, 3)).astype(np.uint8)
    return {"image": image, "segments": seg, "image_meta": {"id": "a", "image_shape": (h, w)}}


def box_sample(h=40, w=60, box=(10, 5, 30, 25)):
    """A mask whose class-1 pixels are exactly the box, and the box and its corner joints."""
    x1, y1, x2, y2 = box
    seg = np.zeros((h, w), np.uint8)
    seg[y1:y2, x1:x2] = 1
    image = np.zeros((h, w, 3), np.uint8)
    image[seg == 1] = 200
    joints = np.array([[[x1, y1], [x2 - 1, y2 - 1]]], np.float32)  # pixel-index corners of the box
    return {"image": image, "segments": seg, "bboxes": np.array([box], np.float32), "joints2d": joints}


def mask_box(seg, cls=1):
    ys, xs = np.nonzero(seg == cls)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def test_flip_twice_is_identity_and_boxes_mirror():
    s = box_sample()
    orig = {k: v.copy() for k, v in s.items()}
    flip = RandomFlipImage(prob=1.0)
    once = flip(dict(s))
    np.testing.assert_array_equal(once["image"], orig["image"][:, ::-1])
    np.testing.assert_array_equal(once["bboxes"], [[60 - 30, 5, 60 - 10, 25]])
    np.testing.assert_array_equal(mask_box(once["segments"]), once["bboxes"][0])
    np.testing.assert_array_equal(once["joints2d"][0, :, 0], [59 - 10, 59 - 29])
    twice = flip(once)
    for k in ("image", "segments", "bboxes", "joints2d"):
        np.testing.assert_array_equal(twice[k], orig[k])


def test_flip_prob_zero_and_defaults_swap_nothing():
    s = make_sample()
    s["labels"] = np.array([0, 1, 2])
    out = RandomFlipImage(prob=0.0)(dict(s))
    np.testing.assert_array_equal(out["image"], s["image"])
    assert out["image_meta"]["flipped"] is False
    out = RandomFlipImage(prob=1.0)(dict(s))
    np.testing.assert_array_equal(out["labels"], [0, 1, 2])
    assert set(np.unique(out["segments"])) <= set(np.unique(s["segments"]))


def test_flip_swaps_joint_ids_and_labels():
    joints = np.array([[0, 0], [5, 1], [7, 2]], np.float32)  # K=3: joints 1 and 2 are a left/right pair
    seg = np.array([[1, 2, 0, 0]], np.uint8)
    s = {"image": np.zeros((1, 4, 3), np.uint8), "segments": seg, "joints2d": joints, "labels": np.array([1, 2, 3])}
    out = RandomFlipImage(prob=1.0, swap_ids=[[1], [2]], swap_labels=[[1, 2]])(s)
    np.testing.assert_array_equal(out["joints2d"], [[3, 0], [3 - 7, 2], [3 - 5, 1]])
    np.testing.assert_array_equal(out["labels"], [2, 1, 3])
    np.testing.assert_array_equal(out["segments"], [[0, 0, 1, 2]])  # flipped [0,0,2,1], then 1<->2


def test_resize_shape_nearest_mask_and_meta():
    s = make_sample(30, 40)
    labels = set(np.unique(s["segments"]))
    out = ResizeS(target_dim=(64, 48))(s)
    assert out["image"].shape == (48, 64, 3) and out["image"].dtype == np.uint8
    assert out["segments"].shape == (48, 64) and out["segments"].dtype == np.uint8
    assert set(np.unique(out["segments"])) <= labels  # nearest: no blended labels
    assert out["image_meta"]["image_shape"] == (48, 64)
    assert out["image_meta"]["scale_factor"] == pytest.approx((1.6, 1.6, 1.6, 1.6))
    assert ResizeS(target_dim=16)(make_sample())["image"].shape == (16, 16, 3)


def test_resize_keeps_boxes_and_joints_on_the_object():
    out = ResizeS(target_dim=(120, 20))(box_sample())  # x * 2, y * 0.5
    np.testing.assert_allclose(out["bboxes"], [[20, 2.5, 60, 12.5]])
    np.testing.assert_allclose(mask_box(out["segments"]), out["bboxes"][0], atol=1)
    np.testing.assert_allclose(out["joints2d"][0, 0], [(10 + 0.5) * 2 - 0.5, (5 + 0.5) * 0.5 - 0.5])


def test_resize_by_short_keeps_aspect_and_max_size():
    assert ResizeByShort(short_size=15)(make_sample(30, 40))["image"].shape == (15, 20, 3)
    assert ResizeByShort(short_size=30, max_size=50)(make_sample(30, 100))["image"].shape == (15, 50, 3)


def test_rotation_prob_zero_is_identity():
    s = make_sample()
    orig = {k: v.copy() for k, v in s.items() if isinstance(v, np.ndarray)}
    out = Rotation(degree=30, prob=0.0)(s)
    for k, v in orig.items():
        np.testing.assert_array_equal(out[k], v)


def test_rotation_fills_255_only_in_corners():
    s = make_sample(41, 41)
    s["segments"][:] = 3
    out = Rotation(degree=(45, 45), prob=1.0, border_value=(7, 8, 9))(s)
    seg = out["segments"]
    assert set(np.unique(seg)) == {3, 255}
    for y, x in ((0, 0), (0, 40), (40, 0), (40, 40)):
        assert seg[y, x] == 255
        np.testing.assert_array_equal(out["image"][y, x], [7, 8, 9])  # border_value is used
    assert seg[20, 20] == 3 and seg[20, 0] == 3  # the inscribed disc stays labelled
    assert out["image_meta"]["rotation"] == pytest.approx(45.0)


def test_rotation_angle_is_symmetric_float():
    np.random.seed(0)
    t = Rotation(degree=30, prob=1.0)
    angles = [t(make_sample(8, 8))["image_meta"]["rotation"] for _ in range(200)]
    assert min(angles) < -25 and max(angles) > 25 and all(-30 <= a <= 30 for a in angles)
    assert any(a != int(a) for a in angles)


def test_rotation_boxes_and_joints_follow_the_object():
    s = box_sample(61, 61, box=(20, 25, 40, 35))
    out = Rotation(degree=(90, 90), prob=1.0)(s)
    # 90 degrees about the centre: the box becomes the mask's bounding box
    np.testing.assert_allclose(out["bboxes"][0], mask_box(out["segments"]), atol=1.0)
    for j in out["joints2d"][0]:
        assert out["segments"][int(round(j[1])), int(round(j[0]))] == 1
    out = Rotation(degree=(30, 30), prob=1.0)(box_sample(61, 61, box=(20, 25, 40, 35)))
    b, m = out["bboxes"][0], mask_box(out["segments"])
    assert b[0] <= m[0] + 1 and b[1] <= m[1] + 1 and b[2] >= m[2] - 1 and b[3] >= m[3] - 1


def test_pad_fills_255_only_outside_the_image():
    s = make_sample(30, 40)
    out = Pad(size_divisor=32, pad_val=(1, 2, 3))(dict(s))
    assert out["image"].shape == (32, 64, 3)
    np.testing.assert_array_equal(out["segments"][:30, :40], s["segments"])
    assert (out["segments"][30:] == 255).all() and (out["segments"][:, 40:] == 255).all()
    np.testing.assert_array_equal(out["image"][31, 63], [1, 2, 3])
    assert Pad(size=(50, 30))(make_sample(30, 40))["image"].shape == (30, 50, 3)
    with pytest.raises(ValueError):
        Pad()


def test_center_crop_window():
    s = make_sample(30, 40)
    out = CenterCrop(crop_size=(20, 10))(dict(s))
    np.testing.assert_array_equal(out["image"], s["image"][10:20, 10:30])


def test_random_scale_crop_pads_with_255_only_outside_image():
    np.random.seed(1)
    for _ in range(20):
        s = make_sample(20, 24)
        s["segments"][:] = np.random.randint(0, 3, size=(20, 24))
        s["image"][:] = 100
        out = RandomScaleCrop(crop_size=(48, 40), scale_range=(0.5, 2.0), pad_val=0)(s)
        assert out["image"].shape == (40, 48, 3) and out["segments"].shape == (40, 48)
        seg, img = out["segments"], out["image"]
        assert set(np.unique(seg)) <= {0, 1, 2, 255}
        padded = seg == 255
        assert (img[padded] == 0).all()  # void only where the image is padding
        assert (img[~padded] == 100).all()


def test_random_scale_crop_cat_max_ratio():
    np.random.seed(0)
    seg = np.zeros((64, 64), np.uint8)
    seg[:, 56:] = 1
    t = RandomScaleCrop(crop_size=(16, 16), scale_range=(1.0, 1.0), cat_max_ratio=0.9)
    hits = sum(len(np.unique(t({"image": np.zeros((64, 64, 3), np.uint8), "segments": seg.copy()})["segments"])) > 1
               for _ in range(30))
    assert hits >= 15  # without the retry only ~1 window in 7 crosses the boundary


def test_built_from_config_with_keys():
    t = TRANSFORMS.build(dict(type="ResizeS", target_dim=(8, 8), keys=["image"]))
    out = t(make_sample())
    assert out["image"].shape == (8, 8, 3) and out["segments"].shape == (30, 40)
    with pytest.raises(ValueError, match="interp"):
        ResizeS(target_dim=8, interp="BOGUS")

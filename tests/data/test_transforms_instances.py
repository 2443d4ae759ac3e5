"""Geometric transforms keep boxes, keypoints and per-box fields on the drawn shapes.

Each scene draws coloured rectangles into the image and their instance ids into ``segments`` (moved by
nearest-neighbour sampling, so it is the ground truth of where each shape went), with boxes, corner
keypoints and per-box flags; after a transform every kept box must still enclose its shape and every
visible keypoint must still lie on it.
"""
import numpy as np
import pytest

from antgo.data import Reader, build_dataloader
from antgo.data.datasets import COCO2017
from antgo.data.datasets.synthetic_tasks import FLIP_PAIRS, make_demo_kp
from antgo.data.transforms import CenterCrop, RandomFlipImage, RandomScaleCrop, ResizeS, Rotation

RECTS = [(5, 8, 25, 30), (44, 10, 74, 22), (30, 35, 60, 55), (0, 0, 6, 5)]  # x1, y1, x2, y2 (pixels x1..x2-1)
COLOURS = [(250, 30, 30), (30, 250, 30), (30, 30, 250), (250, 250, 30)]
SWAP = [[0, 2], [1, 3]]  # top-left <-> top-right, bottom-left <-> bottom-right


def scene(h=60, w=80, rects=RECTS):
    seg = np.zeros((h, w), np.uint8)
    image = np.full((h, w, 3), 60, np.uint8)
    joints = []
    for i, (x1, y1, x2, y2) in enumerate(rects):
        seg[y1:y2, x1:x2] = i + 1
        image[y1:y2, x1:x2] = COLOURS[i]
        joints.append([[x1, y1, 2], [x2 - 1, y1, 2], [x1, y2 - 1, 2], [x2 - 1, y2 - 1, 2],
                       [(x1 + x2 - 1) / 2, (y1 + y2 - 1) / 2, 1]])
    n = len(rects)
    return {"image": image, "segments": seg, "bboxes": np.array(rects, np.float32).reshape(n, 4),
            "labels": np.arange(n, dtype=np.int64), "iscrowd": np.arange(n) % 2 == 1,
            "areas": np.array([(r[2] - r[0]) * (r[3] - r[1]) for r in rects], np.float32),
            "difficult": np.zeros(n, bool), "joints2d": np.array(joints, np.float32),
            "image_meta": {"id": 0}}


def mask_box(m):
    ys, xs = np.nonzero(m)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def assert_in_sync(out, tol=1.0, tight=True):
    """Every kept box encloses (``tight``: equals) its shape; keypoints are on it or invisible off the image."""
    seg, image = out["segments"], out["image"]
    H, W = seg.shape
    n = len(out["bboxes"])
    assert all(len(out[k]) == n for k in ("labels", "iscrowd", "areas", "difficult", "joints2d"))
    assert out["bboxes"].dtype == np.float32 and out["joints2d"].dtype == np.float32
    visible = set(np.unique(seg).tolist()) - {0, 255}
    assert visible <= {int(i) + 1 for i in out["labels"]}  # a shape still in the image keeps its box
    for box, inst, crowd, joints in zip(out["bboxes"], out["labels"], out["iscrowd"], out["joints2d"]):
        assert 0 <= box[0] < box[2] <= W and 0 <= box[1] < box[3] <= H
        assert crowd == (inst % 2 == 1)  # per-box flags moved with their box
        m = seg == inst + 1
        if m.any():
            mb = mask_box(m)
            assert (box[:2] <= mb[:2] + tol).all() and (box[2:] >= mb[2:] - tol).all(), (box, mb)
            if tight:
                np.testing.assert_allclose(box, mb, atol=tol)
            if m.sum() > 30:  # the image moved with the mask
                np.testing.assert_allclose(image[m].mean(0), COLOURS[inst], atol=40)
        for x, y, v in joints:
            on_image = -0.5 <= x < W - 0.5 and -0.5 <= y < H - 0.5  # pixel i spans [i - 0.5, i + 0.5)
            assert (v > 0) == on_image, (x, y, v)
            if v > 0:
                r = int(np.ceil(tol))
                yy, xx = int(np.floor(y + 0.5)), int(np.floor(x + 0.5))
                assert (seg[max(yy - r, 0):yy + r + 1, max(xx - r, 0):xx + r + 1] == inst + 1).any(), (x, y, inst)


def test_flip_mirrors_boxes_and_swaps_left_right_keypoints():
    out = RandomFlipImage(prob=1.0, swap_ids=SWAP)(scene())
    assert_in_sync(out, tol=0)
    for joints in out["joints2d"]:  # after the swap, joint 0 is again the top-left corner
        assert joints[0, 0] < joints[1, 0] and joints[0, 1] < joints[2, 1] and joints[3, 0] > joints[2, 0]
    np.testing.assert_array_equal(out["bboxes"][0], [80 - 25, 8, 80 - 5, 30])


@pytest.mark.parametrize("size", [(160, 120), (40, 30), (100, 45)])
def test_resize_keeps_boxes_keypoints_and_scales_areas(size):
    s = scene()
    out = ResizeS(target_dim=size)(dict(s))
    assert out["image"].shape[:2] == (size[1], size[0])
    assert_in_sync(out, tol=1.0)
    sx, sy = size[0] / 80, size[1] / 60
    np.testing.assert_allclose(out["areas"], s["areas"] * sx * sy, rtol=1e-5)


@pytest.mark.parametrize("angle", [90, 180, -90])
def test_rotation_by_right_angles_keeps_tight_boxes(angle):
    s = scene(61, 61, rects=RECTS[:3])
    out = Rotation(degree=(angle, angle), prob=1.0)(s)
    assert_in_sync(out, tol=1.0)


def test_rotation_drops_boxes_turned_off_the_image_with_their_fields():
    s = scene()
    out = Rotation(degree=(45, 45), prob=1.0)(s)
    assert 4 not in np.unique(out["segments"])  # the corner rectangle left the canvas
    assert out["labels"].tolist() == [0, 1, 2] and len(out["joints2d"]) == 3 and out["iscrowd"].tolist() == [0, 1, 0]
    assert_in_sync(out, tol=1.5, tight=False)  # the box around rotated corners encloses the shape
    assert (out["joints2d"][..., 2] == 0).any()  # corners turned off the image are invisible


def test_rotation_arbitrary_angles_enclose_the_shape():
    np.random.seed(3)
    for _ in range(10):
        assert_in_sync(Rotation(degree=40, prob=1.0)(scene()), tol=1.5, tight=False)


def test_center_crop_clips_boxes_drops_empty_ones_and_hides_keypoints():
    s = scene()
    out = CenterCrop(crop_size=(40, 30))(dict(s))  # window x 20..60, y 15..45
    assert out["labels"].tolist() == [0, 1, 2]  # the corner rectangle is outside the window
    np.testing.assert_array_equal(out["bboxes"], [[0, 0, 5, 15], [24, 0, 40, 7], [10, 20, 40, 30]])
    np.testing.assert_allclose(out["areas"], [5 * 15, 16 * 7, 30 * 10])  # shrunk with the cut-off part
    assert out["joints2d"][0, 0, 2] == 0 and out["joints2d"][0, 3, 2] == 2  # top-left off, bottom-right on
    np.testing.assert_array_equal(out["joints2d"][0, 0, :2], [5 - 20, 8 - 15])  # position kept
    assert_in_sync(out, tol=0)


def test_random_scale_crop_keeps_everything_in_sync():
    np.random.seed(0)
    dropped = hidden = 0
    for _ in range(25):
        out = RandomScaleCrop(crop_size=(48, 40), scale_range=(0.6, 1.6), interp="NEAREST")(scene())
        assert out["image"].shape == (40, 48, 3)
        assert_in_sync(out, tol=1.0)
        dropped += len(out["labels"]) < 4
        hidden += int((out["joints2d"][..., 2] == 0).sum())
    assert dropped and hidden  # the cases that matter did happen


def test_single_instance_keypoints_and_no_boxes():
    s = {"image": np.zeros((20, 20, 3), np.uint8), "joints2d": np.array([[1, 1, 2], [10, 10, 2]], np.float32)}
    out = CenterCrop(crop_size=(10, 10))(s)  # window 5..15
    np.testing.assert_array_equal(out["joints2d"], [[-4, -4, 0], [5, 5, 2]])
    empty = {"image": np.zeros((20, 20, 3), np.uint8), "bboxes": np.zeros((0, 4), np.float32),
             "labels": np.zeros(0, np.int64)}
    out = Rotation(degree=(30, 30), prob=1.0)(ResizeS(target_dim=(10, 10))(empty))
    assert out["bboxes"].shape == (0, 4) and out["labels"].shape == (0,)


def test_keypoint_demo_through_flip_with_flip_pairs_and_collate(tmp_path):
    ds = COCO2017("train", make_demo_kp(tmp_path, counts={"train": 4}), dict(task_type="KEYPOINTS"))
    pipeline = [dict(type="RandomFlipImage", prob=1.0, swap_ids=[list(p) for p in FLIP_PAIRS]),
                dict(type="RandomScaleCrop", crop_size=(96, 96), scale_range=(0.8, 1.2)),
                dict(type="ToTensor")]
    batch = next(iter(build_dataloader(Reader(ds, pipeline), samples_per_gpu=4)))
    assert batch["image"].shape == (4, 3, 96, 96)
    for joints, boxes, areas in zip(batch["joints2d"], batch["bboxes"], batch["areas"]):
        assert joints.shape[1:] == (5, 3) and len(joints) == len(boxes) == len(areas)
    flipped = Reader(ds, pipeline[:1])[0]["joints2d"][0]
    original = ds.sample(0)["joints2d"][0]
    w = ds.sample(0)["image"].shape[1]
    np.testing.assert_allclose(flipped[1, 0], w - 1 - original[2, 0])  # the new left eave was the right one
    assert flipped[1, 0] < flipped[2, 0] or abs(flipped[1, 1] - flipped[2, 1]) > 5  # left still on the left

"""ColorDistort ops, ToTensor, Normalize, UnSqueeze and imnormalize."""
import cv2
import numpy as np
import pytest
import torch

from antgo.data.transforms import ColorDistort, Normalize, ToTensor, UnSqueeze, imnormalize

OFF = (1.0, 1.0, 0.0)


def colourful(h=16, w=16):
    rng = np.random.default_rng(0)
    img = rng.integers(60, 200, size=(h, w, 3)).astype(np.uint8)
    img[:, :, 0] = 180  # strongly red: hue and saturation are well defined
    img[:, :, 2] = 40
    return img


@pytest.mark.parametrize("name,spec,check", [
    ("brightness", (1.4, 1.5, 1.0), lambda a, b: b.astype(float).mean() > a.astype(float).mean() * 1.2),
    ("contrast", (1.8, 2.0, 1.0), lambda a, b: b.astype(float).std() > a.astype(float).std() * 1.3),
    ("saturation", (0.2, 0.3, 1.0), lambda a, b: hsv(b)[..., 1].mean() < hsv(a)[..., 1].mean() * 0.5),
    ("hue", (40, 50, 1.0), lambda a, b: abs(hsv(b)[..., 0].astype(int) - hsv(a)[..., 0]).mean() > 20),
])
def test_each_colour_op_changes_the_image(name, spec, check):
    ops = dict(hue=OFF, saturation=OFF, contrast=OFF, brightness=OFF)
    ops[name] = spec
    img = colourful()
    out = ColorDistort(**ops)({"image": img.copy()})["image"]
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert check(img, out)
    # the other ops alone leave the image as it is
    same = ColorDistort(**dict(ops, **{name: OFF}))({"image": img.copy()})["image"]
    np.testing.assert_array_equal(same, img)


def hsv(rgb):
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)


def test_hue_wraps_at_180():
    img = np.zeros((4, 4, 3), np.uint8)
    img[:] = cv2.cvtColor(np.array([[[170, 255, 255]]], np.uint8), cv2.COLOR_HSV2RGB)[0, 0]
    out = ColorDistort(hue=(20, 20, 1.0), saturation=None, contrast=None, brightness=None)({"image": img})["image"]
    h = hsv(out)[..., 0]
    assert (np.abs(h.astype(int) - 10) <= 2).all()  # 170 + 20 = 190 -> 10


def test_prob_zero_never_applies_and_output_is_clipped():
    img = colourful()
    out = ColorDistort(hue=(-18, 18, 0.0), saturation=(0.5, 1.5, 0.0), contrast=(0.5, 1.5, 0.0),
                       brightness=(0.5, 1.5, 0.0))({"image": img.copy()})["image"]
    np.testing.assert_array_equal(out, img)
    white = np.full((4, 4, 3), 250, np.uint8)
    out = ColorDistort(brightness=(2.0, 2.0, 1.0), hue=None, saturation=None, contrast=None)({"image": white})["image"]
    assert out.dtype == np.uint8 and (out == 255).all()


def test_colour_distort_rejects_tensors():
    with pytest.raises(TypeError, match="RGB uint8"):
        ColorDistort()({"image": torch.zeros(3, 4, 4)})


def test_to_tensor_scaling_and_layout():
    img = np.zeros((2, 3, 3), np.uint8)
    img[0, 1] = (255, 51, 0)
    t = ToTensor(keys=["image"])({"image": img})["image"]
    assert t.shape == (3, 2, 3) and t.dtype == torch.float32
    assert t[:, 0, 1].tolist() == pytest.approx([1.0, 0.2, 0.0])
    f = ToTensor(keys=["x"])({"x": np.full((2, 2), 7.0, np.float64)})["x"]
    assert f.shape == (1, 2, 2) and f.dtype == torch.float32 and float(f[0, 0, 0]) == 7.0  # not scaled


def test_normalize_tensor_and_array():
    t = torch.ones(3, 2, 2) * 0.5
    out = Normalize(mean=(0.5, 0.25, 0.0), std=(1.0, 0.5, 0.25))({"image": t})["image"]
    assert out[:, 0, 0].tolist() == pytest.approx([0.0, 0.5, 2.0])
    arr = np.full((2, 2, 3), 100, np.uint8)
    out = Normalize(mean=(100, 50, 0), std=(1, 2, 4))({"image": arr})["image"]
    assert out.dtype == np.float32 and out[0, 0].tolist() == pytest.approx([0.0, 25.0, 25.0])


def test_unsqueeze_shapes():
    out = UnSqueeze(axis=0, keys=["segments", "t"])({"segments": np.zeros((4, 5), np.uint8), "t": torch.zeros(4, 5)})
    assert out["segments"].shape == (1, 4, 5) and out["segments"].dtype == np.uint8
    assert tuple(out["t"].shape) == (1, 4, 5)
    assert UnSqueeze(axis=-1, keys=["s"])({"s": np.zeros((4, 5))})["s"].shape == (4, 5, 1)


def test_imnormalize_mmcv_semantics():
    img = np.zeros((1, 1, 3), np.uint8)
    img[0, 0] = (10, 20, 30)
    out = imnormalize(img, mean=(10, 20, 30), std=(1, 2, 3))
    assert out.dtype == np.float32 and out[0, 0].tolist() == pytest.approx([0, 0, 0])
    swapped = imnormalize(img, mean=(0, 0, 0), std=(1, 1, 1), to_rgb=True)
    assert swapped[0, 0].tolist() == pytest.approx([30, 20, 10])
    assert img[0, 0].tolist() == [10, 20, 30]  # input untouched

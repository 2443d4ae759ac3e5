"""Decoding image and mask files strictly: a truncated or corrupt file is an error that names it.

libjpeg only warns ("Premature end of JPEG file") and returns a partly grey image when a JPEG is cut
short, so the file's end is checked for the JPEG end-of-image marker (and a PNG's for its IEND chunk)
before decoding. The check costs nothing extra: the bytes are read once and decoded from memory.
:func:`check_image_file` applies the same rule to a file by reading only its head and tail (the pre-flight
check of a whole data set before training, ``antgo.engine.loading.preflight_images``).

The readers a data set plugin should use: :func:`read_rgb` for images, :func:`read_mask` for class-index masks
(size and class range checked), :func:`find_images` to list a folder of images.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

_JPEG_SOI, _JPEG_EOI = b"\xff\xd8", b"\xff\xd9"
_PNG_SIGNATURE, _PNG_IEND = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"
_EOI_WINDOW = 4096  # some writers append padding or metadata after the end-of-image marker
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")  # what OpenCV decodes
VOID = 255  # the mask value that marks pixels to ignore


class CorruptImageError(ValueError):
    """An image file that is truncated or cannot be decoded."""


def _check_complete(path: Path, head: bytes, tail: bytes) -> None:
    """The one completeness rule: not empty, a JPEG ends with its end-of-image marker, a PNG with IEND.

    ``head`` is the file's first 8 bytes, ``tail`` its last ``_EOI_WINDOW`` bytes (the whole file may do)."""
    if not head:
        raise CorruptImageError(f"image file {path} is empty; re-copy or re-encode it, or set "
                                f"skip_bad_samples=True in the data config")
    if head.startswith(_JPEG_SOI) and _JPEG_EOI not in tail:
        raise CorruptImageError(f"image file {path} is truncated: the JPEG has no end-of-image marker "
                                f"(libjpeg: 'Premature end of JPEG file'); re-copy or re-encode it, "
                                f"or set skip_bad_samples=True in the data config to skip such samples")
    if head == _PNG_SIGNATURE and _PNG_IEND not in tail:
        raise CorruptImageError(f"image file {path} is truncated: the PNG has no IEND chunk; re-copy or "
                                f"re-encode it, or set skip_bad_samples=True in the data config")


def check_image_file(path: str | Path) -> None:
    """:func:`decode_rgb`'s completeness rule on a file, reading only its head and its last 4 KiB (no decode).

    Cheap enough to run over a whole data set before training; a file that is complete but undecodable in
    the middle passes here and fails when decoded."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            f.seek(max(f.seek(0, os.SEEK_END) - _EOI_WINDOW, 0))
            tail = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"image file {path} does not exist") from None
    except IsADirectoryError:
        raise FileNotFoundError(f"image file {path} is a directory, not a file") from None
    _check_complete(path, head, tail)


# OpenCV >= 4.11 decodes straight to RGB (no conversion pass); older releases decode BGR
_DECODES_RGB = hasattr(cv2, "IMREAD_COLOR_RGB")
_DECODE_FLAG = cv2.IMREAD_COLOR_RGB if _DECODES_RGB else cv2.IMREAD_COLOR


def read_bytes(path: str | Path) -> np.ndarray:
    """The file's bytes as a ``uint8`` array (FileNotFoundError naming the file when it is missing)."""
    path = Path(path)
    try:
        return np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"image file {path} does not exist") from None
    except IsADirectoryError:
        raise FileNotFoundError(f"image file {path} is a directory, not a file") from None


def decode_rgb(data: np.ndarray, path: str | Path = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to RGB ``uint8`` ``(H, W, 3)``; truncated or undecodable -> CorruptImageError."""
    path = Path(path)
    _check_complete(path, data[:8].tobytes(), data[-_EOI_WINDOW:].tobytes())
    img = cv2.imdecode(data, _DECODE_FLAG)
    if img is None:
        raise CorruptImageError(f"cannot decode image {path} (corrupt or not an image)")
    return img if _DECODES_RGB else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_rgb(path: str | Path) -> np.ndarray:
    """Read and strictly decode an image file as RGB ``uint8`` ``(H, W, 3)``."""
    return decode_rgb(read_bytes(path), path)


def find_images(folder: str | Path) -> dict[str, Path]:
    """``{name: file}`` of the images in ``folder`` (suffixes :data:`IMAGE_SUFFIXES`, any case; hidden files
    left out). A missing folder, a folder without images or two images of one name is an error naming it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    images: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
            continue
        if path.stem in images:
            raise ValueError(f"two images named {path.stem!r} in {folder}: {images[path.stem].name} and "
                             f"{path.name}; keep one (a sample is named by its file name without the extension)")
        images[path.stem] = path
    if not images:
        raise FileNotFoundError(f"no images in {folder}: expected files ending in {', '.join(IMAGE_SUFFIXES)}")
    return images


def _open_mask(path: Path) -> np.ndarray:
    """The pixel values of an 8-bit palette ('P') or grey ('L') PNG; other modes are refused by name."""
    if not path.is_file():
        raise FileNotFoundError(f"mask file {path} does not exist")
    try:
        with Image.open(path) as im:
            if im.mode.startswith(("I", "F")):  # I;16, I, F: a cast to uint8 would wrap 258 to 2
                raise ValueError(f"mask {path} is a 16/32-bit image (PIL mode {im.mode!r}); save masks as 8-bit "
                                 f"grey ('L') or palette ('P') PNGs of class indices ({VOID} = void)")
            if im.mode not in ("P", "L"):
                raise ValueError(f"mask {path} has PIL mode {im.mode!r}; expected a palette ('P') or grey ('L') "
                                 f"PNG whose pixel values are class indices ({VOID} = void), not colours: "
                                 f"convert each colour to its class index")
            return np.array(im, dtype=np.uint8)
    except (OSError, SyntaxError) as exc:  # PIL: truncated data, broken chunks, empty file, not an image
        raise CorruptImageError(f"cannot decode mask {path} (truncated or corrupt: {exc})") from exc


def check_mask_values(mask: np.ndarray, num_classes: int, path: str | Path) -> None:
    """Every value of a ``uint8`` mask is a class index ``0..num_classes-1`` or :data:`VOID`, else ValueError
    naming the file, the values, the class count and the fix (a loss would fail on them, a metric skip them)."""
    # the cheap test first: this runs for every sample
    if num_classes >= VOID or not cv2.countNonZero(cv2.inRange(mask, num_classes, VOID - 1)):
        return
    bad = np.unique(mask[(mask >= num_classes) & (mask != VOID)]).tolist()
    raise ValueError(f"mask {path} has values {bad[:10]} that are neither a class index (0..{num_classes - 1}: "
                     f"{num_classes} classes) nor {VOID} (void); relabel those pixels (to a class or {VOID}), or "
                     f"list at least {bad[-1] + 1} classes in the config")


def read_mask(path: str | Path, shape: Sequence[int] | None = None, num_classes: int | None = None) -> np.ndarray:
    """A class-index ``uint8`` mask from a palette ('P') or grey ('L') PNG; :data:`VOID` (255) is kept.

    ``shape``: the image's (height, width), which the mask must have. ``num_classes``: values must be class
    indices or void (:func:`check_mask_values`). Missing, truncated or 16-bit files are errors naming the file."""
    path = Path(path)
    mask = _open_mask(path)
    if shape is not None and mask.shape != tuple(shape):
        raise ValueError(f"mask {path} has shape {mask.shape} but its image is {tuple(shape)}; "
                         f"expected the same height and width")
    if num_classes is not None:
        check_mask_values(mask, num_classes, path)
    return mask

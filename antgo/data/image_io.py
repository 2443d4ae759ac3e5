"""Decoding image and mask files strictly: a truncated or corrupt file is an error that names it.

libjpeg only warns ("Premature end of JPEG file") and returns a partly grey image when a JPEG is cut
short, so the file's end is checked for the JPEG end-of-image marker (and a PNG's for its IEND chunk)
before decoding. The check costs nothing extra: the bytes are read once and decoded from memory.
:func:`check_image_file` applies the same rule to a file by reading only its head and tail (the pre-flight
check of a whole data set before training, ``antgo.engine.loading.preflight_images``).
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

_JPEG_SOI, _JPEG_EOI = b"\xff\xd8", b"\xff\xd9"
_PNG_SIGNATURE, _PNG_IEND = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"
_EOI_WINDOW = 4096  # some writers append padding or metadata after the end-of-image marker


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

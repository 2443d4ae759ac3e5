"""Writing COCO annotation files and Pascal VOC XML annotations (for generated trees)."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def coco_box(mask: np.ndarray) -> list[float] | None:
    """COCO ``[x, y, width, height]`` around the True pixels of ``mask`` (continuous pixels), None when empty."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    x0, y0 = int(xs.min()), int(ys.min())
    return [float(x0), float(y0), float(xs.max() + 1 - x0), float(ys.max() + 1 - y0)]


def write_coco_json(path: Path, images: list[dict[str, Any]], annotations: list[dict[str, Any]],
                    categories: list[dict[str, Any]], description: str) -> None:
    """A COCO annotation file (``info``, ``licenses``, ``images``, ``annotations``, ``categories``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"info": {"description": description, "version": "1.0"}, "licenses": [], "images": images,
            "annotations": annotations, "categories": categories}
    path.write_text(json.dumps(data, separators=(",", ":")))


def write_voc_xml(path: Path, filename: str, hw: tuple[int, int], objects: Sequence[dict[str, Any]]) -> None:
    """A VOC annotation: ``objects`` are ``{'name', 'box': (x1, y1, x2, y2) continuous pixels, 'difficult'}``.

    VOC stores 1-based inclusive pixel indices, so ``xmin = x1 + 1`` and ``xmax = x2``.
    """
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    for tag, value in (("width", hw[1]), ("height", hw[0]), ("depth", 3)):
        ET.SubElement(size, tag).text = str(int(value))
    for obj in objects:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = obj["name"]
        ET.SubElement(node, "truncated").text = "0"
        ET.SubElement(node, "difficult").text = "1" if obj.get("difficult") else "0"
        box = ET.SubElement(node, "bndbox")
        x1, y1, x2, y2 = obj["box"]
        for tag, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(box, tag).text = str(int(round(value)))
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path)

"""Pascal VOC 2012 object detection: ``Annotations/<id>.xml`` boxes over the ``ImageSets/Main`` splits.

Built through ``Pascal2012(..., ext_params=dict(task_type='DETECTION'))``, which dispatches here.
"""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from antgo.data.datasets._layout import check_flag, check_split, layout_error
from antgo.data.datasets.pascal_voc import SPLITS, VOC_CLASS_NAMES, Pascal2012, find_voc_root, read_ids
from antgo.data.dataset import Dataset

logger = logging.getLogger(__name__)

LAYOUT = """\
  DIR/                               (dir in the config)
    VOCdevkit/VOC2012/               (or DIR/VOC2012/, or DIR is the VOC2012 folder itself)
      JPEGImages/<id>.jpg
      Annotations/<id>.xml           <object><name>, <difficult>, <bndbox> xmin ymin xmax ymax (1-based)
      ImageSets/Main/{train,val,trainval}.txt   one id per line
      class_names.txt                optional: one class name per line, 'background' first is skipped
                                     (default: the 20 VOC object classes)"""
HINT = "antgo does not download data sets: fetch VOCtrainval_11-May-2012.tar yourself."


def _error(what: str) -> FileNotFoundError:
    return layout_error("Pascal2012 (DETECTION)", what, LAYOUT, HINT)


def parse_voc_xml(path: Path, class_index: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(bboxes float32 (N, 4) xyxy continuous pixels, labels int64 (N,), difficult bool (N,))`` of one XML."""
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"annotation file {path} is not valid XML: {exc}") from exc
    boxes, labels, difficult = [], [], []
    for k, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        if name not in class_index:
            raise ValueError(f"annotation file {path}: object {k} has class {name!r}, not one of "
                             f"{sorted(class_index)}; add it to class_names.txt")
        box = obj.find("bndbox")
        try:
            xmin, ymin, xmax, ymax = (float(box.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError) as exc:
            raise ValueError(f"annotation file {path}: object {k} ({name}) needs <bndbox> with numeric "
                             f"xmin, ymin, xmax, ymax") from exc
        boxes.append((xmin - 1, ymin - 1, xmax, ymax))  # 1-based inclusive pixels -> continuous coordinates
        labels.append(class_index[name])
        difficult.append((obj.findtext("difficult") or "0").strip() == "1")
    return (np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64),
            np.array(difficult, bool))


def detection_class_names(voc_root: Path) -> tuple[str, ...]:
    """``class_names.txt`` without a leading 'background', else the 20 VOC object classes."""
    names_file = voc_root / "class_names.txt"
    if not names_file.is_file():
        return VOC_CLASS_NAMES[1:]
    names = read_ids(names_file)
    return tuple(names[1:] if names and names[0] == "background" else names)


class Pascal2012Detection(Pascal2012):
    """VOC 2012 detection: ``sample(i) -> {'image', 'bboxes', 'labels', 'difficult', 'image_meta'}``.

    ``bboxes`` float32 (N, 4) xyxy in continuous pixels (``xmin - 1, ymin - 1, xmax, ymax``), ``labels``
    int64 indices into ``class_names`` (no background), ``difficult`` bool. ``ext_params``:
    ``keep_difficult`` (True: difficult objects stay, flagged; False drops them).
    """

    def __init__(self, train_or_test: str = "train", dir: str | Path | None = None,
                 ext_params: dict[str, Any] | None = None) -> None:
        Dataset.__init__(self, train_or_test, dir, ext_params)
        unknown = sorted(set(self.ext_params) - {"task_type", "keep_difficult"})
        if unknown:
            logger.warning("Pascal2012 (DETECTION): ignoring unknown ext_params %s", unknown)
        check_split("Pascal2012", train_or_test, SPLITS)
        self.keep_difficult = check_flag("Pascal2012", self.ext_params, "keep_difficult", True)
        if dir is None:
            raise _error("dir is not set")
        try:
            self.voc_root = find_voc_root(dir)
        except FileNotFoundError as exc:
            raise _error(str(exc).splitlines()[0].removeprefix("Pascal2012: ")) from None
        split_file = self.voc_root / "ImageSets" / "Main" / f"{train_or_test}.txt"
        if not split_file.is_file():
            raise _error(f"split file {split_file} does not exist")
        if not (self.voc_root / "Annotations").is_dir():
            raise _error(f"folder {self.voc_root / 'Annotations'} does not exist")
        self.class_names = detection_class_names(self.voc_root)
        self._class_index = {n: i for i, n in enumerate(self.class_names)}
        self.ids: list[str] = list(dict.fromkeys(read_ids(split_file)))
        self.num_sbd = 0
        logger.info("Pascal2012 DETECTION %s: %d images, %d classes in %s", train_or_test, len(self.ids),
                    len(self.class_names), self.voc_root)

    def image_files(self, id: int) -> list[Path]:
        """The JPEG ``sample(id)`` decodes (its XML is parsed, not decoded)."""
        return [self._image_file(id)[1]]

    def sample(self, id: int) -> dict[str, Any]:
        sid, out = self._read_image(id)
        boxes, labels, difficult = parse_voc_xml(self.voc_root / "Annotations" / f"{sid}.xml", self._class_index)
        if not self.keep_difficult:
            boxes, labels, difficult = boxes[~difficult], labels[~difficult], difficult[~difficult]
        out.update(bboxes=boxes, labels=labels, difficult=difficult)
        return out

"""COCO 2017 object detection and person keypoints, read from the standard file layout (json only)."""
from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from antgo.data.dataset import Dataset
from antgo.data.datasets._layout import check_flag, check_split, layout_error
from antgo.data.datasets.pascal_voc import read_rgb
from antgo.data.reader import register

logger = logging.getLogger(__name__)

TASKS = ("DETECTION", "KEYPOINTS")
SPLITS = ("train", "val")
ANNOTATION_FILES = {"DETECTION": "instances_{split}2017.json", "KEYPOINTS": "person_keypoints_{split}2017.json"}
LAYOUT = """\
  DIR/                                           (dir in the config)
    annotations/instances_{train,val}2017.json          task_type='DETECTION'
    annotations/person_keypoints_{train,val}2017.json   task_type='KEYPOINTS'
    train2017/<file_name>                         images named by the json's images[].file_name
    val2017/<file_name>"""
HINT = ("antgo does not download data sets: fetch train2017.zip, val2017.zip and annotations_trainval2017.zip "
        "from cocodataset.org yourself (or set ext_params ann_file=/image_dir= for another COCO-format set), or "
        "generate a demo set with `python -m antgo.data.datasets.synthetic demo DIR --task det` (or kp).")


def _error(what: str) -> FileNotFoundError:
    return layout_error("COCO2017", what, LAYOUT, HINT)


def load_coco_json(path: Path) -> dict[str, Any]:
    """The parsed annotation file, checked for the ``images``/``annotations``/``categories`` lists."""
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"COCO2017: {path} is not valid JSON: {exc}") from exc
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise ValueError(f"COCO2017: {path} has no list {missing}; a COCO annotation file has 'images', "
                         f"'annotations' and 'categories'")
    return data


def flip_pairs(names: list[str]) -> list[list[int]]:
    """``[left_ids, right_ids]`` for keypoints named ``left_*``/``right_*`` (RandomFlipImage ``swap_ids``)."""
    index = {n: i for i, n in enumerate(names)}
    left = [i for i, n in enumerate(names) if n.startswith("left_") and "right_" + n[5:] in index]
    return [left, [index["right_" + names[i][5:]] for i in left]] if left else []


@register
class COCO2017(Dataset):
    """COCO detection (``task_type='DETECTION'``) or person keypoints (``'KEYPOINTS'``).

    ``sample(i)`` -> ``image`` (RGB uint8), ``bboxes`` float32 (N, 4) xyxy pixels, ``labels`` int64 (N,)
    (index into ``class_names``; ``cat_ids[label]`` is the COCO category id), ``iscrowd`` bool (N,),
    ``areas`` float32 (N,) (the annotation's segment area, as COCO eval uses), ``image_meta`` (``id`` = the
    COCO image id, ``image_file``, ``image_shape``); KEYPOINTS adds ``joints2d`` float32 (N, K, 3)
    ``x, y, visibility`` (0 unlabelled, 1 occluded, 2 visible). Boxes without positive width and height
    are skipped. ``ext_params``: ``skip_crowd`` (False: crowd regions are kept, flagged by ``iscrowd``),
    ``skip_empty`` (False), ``ann_file``/``image_dir`` (other names, relative to ``dir``).
    """

    def __init__(self, train_or_test: str = "train", dir: str | Path | None = None,
                 ext_params: dict[str, Any] | None = None) -> None:
        super().__init__(train_or_test, dir, ext_params)
        self.task = str(self.ext_params.get("task_type", "DETECTION")).upper()
        if self.task not in TASKS:
            raise NotImplementedError(f"COCO2017: task_type {self.task!r} is not supported; supported: {TASKS}")
        unknown = sorted(set(self.ext_params) - {"task_type", "skip_crowd", "skip_empty", "ann_file", "image_dir"})
        if unknown:
            logger.warning("COCO2017: ignoring unknown ext_params %s", unknown)
        check_split("COCO2017", train_or_test, SPLITS)
        self.skip_crowd = check_flag("COCO2017", self.ext_params, "skip_crowd", False)
        skip_empty = check_flag("COCO2017", self.ext_params, "skip_empty", False)
        if dir is None:
            raise _error("dir is not set")
        root = Path(dir).expanduser()
        if not root.is_dir():
            raise _error(f"folder {str(root)!r} does not exist")
        self.ann_file = root / self.ext_params.get(
            "ann_file", Path("annotations") / ANNOTATION_FILES[self.task].format(split=train_or_test))
        self.image_dir = root / self.ext_params.get("image_dir", f"{train_or_test}2017")
        if not self.ann_file.is_file():
            raise _error(f"annotation file {self.ann_file} does not exist (task_type={self.task!r})")
        if not self.image_dir.is_dir():
            raise _error(f"image folder {self.image_dir} does not exist")
        self._index(load_coco_json(self.ann_file), skip_empty)
        logger.info("COCO2017 %s %s: %d images, %d instances, %d classes", self.task, train_or_test,
                    len(self.images), sum(len(a) for a in self._anns.values()), len(self.class_names))

    def _index(self, data: dict[str, Any], skip_empty: bool) -> None:
        cats = sorted(data["categories"], key=lambda c: c["id"])
        if self.task == "KEYPOINTS":
            cats = [c for c in cats if c.get("keypoints")]
            if not cats:
                raise ValueError(f"COCO2017: {self.ann_file} has no category with 'keypoints'; "
                                 f"task_type='KEYPOINTS' needs a person_keypoints file")
            self.keypoint_names = list(cats[0]["keypoints"])
            self.skeleton = [list(e) for e in cats[0].get("skeleton", [])]  # 1-based, as in COCO
            self.flip_pairs = flip_pairs(self.keypoint_names)
        self.cat_ids = tuple(int(c["id"]) for c in cats)
        self.class_names = tuple(str(c["name"]) for c in cats)
        self._label = {cid: i for i, cid in enumerate(self.cat_ids)}
        images = {int(im["id"]): im for im in data["images"]}
        self._anns: dict[int, list[dict]] = defaultdict(list)
        for k, ann in enumerate(data["annotations"]):
            if ann.get("image_id") not in images:
                raise ValueError(f"COCO2017: {self.ann_file} annotations[{k}] (id {ann.get('id')}) refers to "
                                 f"image_id {ann.get('image_id')!r}, which is not in 'images'")
            if ann.get("category_id") not in self._label:
                if self.task == "DETECTION":
                    raise ValueError(f"COCO2017: {self.ann_file} annotations[{k}] has category_id "
                                     f"{ann.get('category_id')!r}, not one of {list(self.cat_ids)}")
                continue  # a keypoint file may hold categories without keypoints
            if self.skip_crowd and ann.get("iscrowd", 0):
                continue
            self._anns[int(ann["image_id"])].append(ann)
        ids = sorted(images)
        self.images = [images[i] for i in ids if self._anns.get(i) or not skip_empty]

    @property
    def size(self) -> int:
        return len(self.images)

    def _instances(self, anns: list[dict]) -> dict[str, np.ndarray]:
        k = len(self.keypoint_names) if self.task == "KEYPOINTS" else 0
        rows = []
        for ann in anns:
            bbox = ann.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise ValueError(f"COCO2017: {self.ann_file} annotation id {ann.get('id')} has bbox {bbox!r}; "
                                 f"expected [x, y, width, height]")
            if bbox[2] <= 0 or bbox[3] <= 0:
                continue
            kps = ann.get("keypoints") or [0] * (3 * k)
            if len(kps) != 3 * k:
                raise ValueError(f"COCO2017: {self.ann_file} annotation id {ann.get('id')} has {len(kps)} keypoint "
                                 f"values; expected {3 * k} (x, y, v for {k} keypoints)")
            rows.append((bbox, ann, kps))
        x, y, w, h = (np.array([r[0][i] for r in rows], np.float32).reshape(-1) for i in range(4))
        out = {"bboxes": np.stack([x, y, x + w, y + h], 1).reshape(-1, 4),
               "labels": np.array([self._label[r[1]["category_id"]] for r in rows], np.int64).reshape(-1),
               "iscrowd": np.array([bool(r[1].get("iscrowd", 0)) for r in rows], bool).reshape(-1),
               "areas": np.array([r[1].get("area", r[0][2] * r[0][3]) for r in rows], np.float32).reshape(-1)}
        if self.task == "KEYPOINTS":
            out["joints2d"] = np.array([r[2] for r in rows], np.float32).reshape(-1, k, 3)
        return out

    def _info(self, id: int) -> tuple[dict[str, Any], Path]:
        if not 0 <= int(id) < len(self.images):
            raise IndexError(f"COCO2017 {self.train_or_test}: index {id} out of range 0..{len(self.images) - 1}")
        info = self.images[int(id)]
        return info, self.image_dir / str(info["file_name"])

    def image_files(self, id: int) -> list[Path]:
        """The image ``sample(id)`` decodes (the pre-flight check reads its head and tail)."""
        return [self._info(id)[1]]

    def sample(self, id: int) -> dict[str, Any]:
        info, image_file = self._info(id)
        image = read_rgb(image_file)
        expected = (info.get("height"), info.get("width"))
        if None not in expected and tuple(image.shape[:2]) != tuple(expected):
            raise ValueError(f"COCO2017: image {image_file} is {image.shape[1]}x{image.shape[0]} but {self.ann_file} "
                             f"says {expected[1]}x{expected[0]} (width x height); the file does not match its entry")
        meta = {"id": int(info["id"]), "image_file": str(image_file), "image_shape": image.shape[:2]}
        return {"image": image, **self._instances(self._anns.get(int(info["id"]), [])), "image_meta": meta}

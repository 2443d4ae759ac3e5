"""``Tester``: evaluate a checkpoint on ``data.test`` with ``evaluation.metric``; optional PNG overlays."""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from antgo.engine.evaluation import evaluate, json_safe
from antgo.engine.memory import note_out_of_memory
from antgo.engine.runlock import ensure_held, require_writable_folder
from antgo.fileio import atomic_write_text
from antgo.config import load_config
from antgo.predict.overlay import colourise, voc_palette  # noqa: F401  (voc_palette: re-exported)

logger = logging.getLogger(__name__)


class Tester:
    """``Tester(cfg, work_dir, device)``; ``config_model(checkpoint)``; ``evaluate(json_file, vis_dir, num_vis)``.

    After ``evaluate``: ``tester.metrics`` holds the metric objects (``SegMIOU.confusion_matrix``),
    ``tester.results`` the merged values and ``tester.vis_files`` the written PNGs.
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, cfg: Any, work_dir: str = "./output", device: str | None = None,
                 gpu_id: int | None = None) -> None:
        from antgo.engine.device import fast_path, resolve_device

        self.cfg = load_config(cfg)
        self.work_dir = os.path.abspath(work_dir)
        self.device = resolve_device(device, gpu_id)
        fast = fast_path(self.cfg, self.device)  # the trainer's defaults: bf16 + channels_last on CUDA
        self.amp, self.channels_last = fast.amp, fast.channels_last
        self.model: torch.nn.Module | None = None
        self.checkpoint: str | None = None
        self.metrics: list[Any] = []
        self.results: dict[str, float] = {}
        self.vis_files: list[str] = []
        self.reader: Any = None
        self.batch_transform: Any = None  # the device batch transform of split_for_device

    def config_model(self, checkpoint: str | None = None, strict: bool = True) -> None:
        """Build the model and load ``checkpoint`` (falls back to the config key ``checkpoint``)."""
        from antgo.engine.loading import build_model_from_checkpoint

        checkpoint = checkpoint or self.cfg.get("checkpoint")
        if not checkpoint:
            raise ValueError("no checkpoint to test: pass config_model(checkpoint='…/best.pth') (CLI: --checkpoint) "
                             "or set checkpoint='…' in the config")
        model = build_model_from_checkpoint(self.cfg, checkpoint, self.device, strict=strict)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model.eval()
        self.checkpoint = str(checkpoint)
        logger.info("Tester: %s with weights %s on %s", type(model).__name__, checkpoint, self.device)

    def _build_loader(self) -> Any:
        from antgo.data.builder import build_split_loader
        from antgo.engine.loading import require_samples

        data = self.cfg.get("data") or {}
        if data.get("test") is None:
            raise KeyError("config has no data.test; add data=dict(test=dict(type=..., ...)) to evaluate")
        loader_cfg = dict(data.get("test_dataloader") or {})
        if loader_cfg.get("shuffle"):
            logger.warning("data.test_dataloader.shuffle=True ignored: test order must follow the data set")
        loader_cfg["shuffle"] = False
        loader, self.batch_transform = build_split_loader(data["test"], "data.test", self.device,
                                                          check=lambda reader: require_samples(reader, "data.test"),
                                                          **loader_cfg)
        self.reader = loader.dataset
        return loader

    def evaluate(self, json_file: str | None = None, vis_dir: str | None = None, num_vis: int = 0) -> dict[str, float]:
        """Evaluate on ``data.test``, write ``json_file`` (default ``work_dir/eval_results.json``), return metrics."""
        from antgo.metrics import build_metrics

        json_file = json_file or os.path.join(self.work_dir, "eval_results.json")
        vis_dir = vis_dir or os.path.join(self.work_dir, "vis")
        self._require_output_folders(json_file, vis_dir if num_vis > 0 else None)
        if self.model is None:
            self.config_model()
        evaluation = self.cfg.get("evaluation") or {}
        self.metrics = build_metrics(evaluation.get("metric"))
        if not self.metrics:
            raise KeyError("config has no evaluation.metric; add e.g. evaluation=dict(metric=dict(type='SegMIOU', "
                           "class_num=21))")
        loader = self._build_loader()
        keep: list[tuple[int, dict[str, Any], dict[str, Any]]] = []
        counter = {"next": 0}

        def collect(_: int, batch: Mapping[str, Any], preds: dict[str, Any], gts: dict[str, Any]) -> None:
            n = len(next(iter(preds.values())))
            for j in range(n):
                if len(keep) < num_vis:
                    keep.append((counter["next"] + j, {k: v[j] for k, v in preds.items()},
                                 {k: v[j] for k, v in gts.items()}))
            counter["next"] += n

        try:
            self.results = evaluate(self.model, loader, self.metrics, self.device, amp=self.amp,
                                    channels_last=self.channels_last, on_batch=collect if num_vis > 0 else None,
                                    desc="test", amp_dtype=str(self.cfg.get("amp_dtype", "bfloat16")),
                                    batch_transform=self.batch_transform)
        except Exception as exc:
            note_out_of_memory(exc, "in the test", loader, "data.test_dataloader", self.device)
            raise
        # logged before the file is written: a failed write must not lose the metrics of a whole evaluation
        logger.info("Test metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in self.results.items()))
        ensure_held(json_file, f"writing {json_file}")
        atomic_write_text(json_file, json.dumps(json_safe(self.results), indent=2))
        self.json_file = json_file
        logger.info("Test metrics written to %s", json_file)
        if num_vis > 0:
            self.vis_files = self._visualise(keep, vis_dir)
        return self.results

    def _require_output_folders(self, json_file: str, vis_dir: str | None) -> None:
        """Before the evaluation, not after it: a folder the results cannot be written to fails at once."""
        folder = os.path.dirname(os.path.abspath(json_file))
        require_writable_folder(folder, "--work-dir" if folder == os.path.abspath(self.work_dir) else "--json")
        if vis_dir is not None:
            require_writable_folder(vis_dir, "--vis-dir")

    def _visualise(self, samples: list[tuple[int, dict[str, Any], dict[str, Any]]], vis_dir: str) -> list[str]:
        """Side by side: input image (when the data set can re-read it) | ground truth | prediction."""
        import cv2

        spec = self.metrics[0].keys() if callable(getattr(self.metrics[0], "keys", None)) else {}
        pred_key = (spec.get("pred") or [None])[0]
        gt_key = (spec.get("gt") or [None])[0]
        if pred_key in ("box", "pred_joints2d"):  # boxes / keypoints: the overlays of the flow's evaluate stage
            from antgo.tracking.task_plots import task_plots  # no MLflow: figures only

            return [path for path, _ in task_plots(self, vis_dir, len(samples))]
        if pred_key != "pred_segments":
            logger.info("no visualisation for '%s' predictions (masks, boxes and keypoints have one)", pred_key)
            return []
        os.makedirs(vis_dir, exist_ok=True)
        files: list[str] = []
        for index, pred, gt in samples:
            p = np.asarray(pred.get(pred_key)) if pred_key in pred else None
            if p is None or p.squeeze().ndim != 2:
                logger.warning("visualisation needs 2-D predictions under '%s'; skipped", pred_key)
                return files
            p = p.squeeze()
            panels = []
            image = self._raw_image(index)
            if image is not None:
                panels.append(cv2.resize(image, (p.shape[1], p.shape[0]), interpolation=cv2.INTER_AREA))
            if gt_key in gt:
                panels.append(colourise(np.asarray(gt[gt_key]).reshape(p.shape)))
            panels.append(colourise(p))
            path = os.path.join(vis_dir, f"{index:05d}.png")
            cv2.imwrite(path, cv2.cvtColor(np.concatenate(panels, axis=1), cv2.COLOR_RGB2BGR))
            files.append(path)
        logger.info("Wrote %d visualisations to %s", len(files), vis_dir)
        return files

    def _raw_image(self, index: int) -> np.ndarray | None:
        try:
            image = self.reader.dataset.sample(index)["image"]
        except Exception as exc:  # the overlay is optional: a data set without raw images still gets GT | pred
            logger.debug("no raw image for sample %d: %s", index, exc)
            return None
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            return None
        return image.astype(np.uint8) if image.dtype != np.uint8 else image

"""Detection post-process without torchvision: peak decoding of centre heat maps and class-wise NMS.

One function (``decode_centernet``) turns the raw head tensors into per-sample ``box``/``score``/``label``;
``forward_test`` and ONNX parity (``onnx_postprocess``) both call it, so they can only differ by the graph.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU matrix of xyxy boxes ``a`` (N, 4) and ``b`` (M, 4)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-12)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float
                ) -> torch.Tensor:
    """Indices kept by greedy NMS within each label, highest score first (the torchvision semantics)."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    # shift each class into its own coordinate range so boxes of different classes never overlap
    shifted = boxes + labels.to(boxes.dtype)[:, None] * (boxes.max() - boxes.min() + 1)
    order = torch.argsort(scores, descending=True, stable=True)
    overlaps = box_iou(shifted[order], shifted[order]) > iou_threshold
    suppressed = torch.zeros(len(order), dtype=torch.bool, device=boxes.device)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlaps[i]
    return order[torch.tensor(keep, dtype=torch.long, device=boxes.device)]


def decode_centernet(heatmap: torch.Tensor, wh: torch.Tensor, offset: torch.Tensor, image_size: tuple[int, int],
                     topk: int = 100, score_thr: float = 0.05, nms_iou: float = 0.6, max_per_img: int = 100
                     ) -> dict[str, list[torch.Tensor]]:
    """Heat-map peaks (3x3 local maxima) → top-k → boxes in input pixels → score filter → class-wise NMS.

    ``heatmap`` (B, C, h, w) sigmoid scores; ``wh`` (B, 2, h, w) box size and ``offset`` (B, 2, h, w) sub-cell
    centre, both in output cells. Returns per-sample lists: ``box`` (N, 4) xyxy, ``score`` (N,), ``label`` (N,).
    """
    heatmap, wh, offset = heatmap.float(), wh.float(), offset.float()
    b, c, h, w = heatmap.shape
    stride_y, stride_x = image_size[0] / h, image_size[1] / w
    peaks = heatmap * (F.max_pool2d(heatmap, 3, stride=1, padding=1) == heatmap)
    scores, index = peaks.reshape(b, -1).topk(min(topk, c * h * w), dim=1)
    labels, cell = index // (h * w), index % (h * w)
    ys, xs = (cell // w).float(), (cell % w).float()
    out: dict[str, list[torch.Tensor]] = {"box": [], "score": [], "label": []}
    for i in range(b):
        size = wh[i].reshape(2, -1)[:, cell[i]]
        shift = offset[i].reshape(2, -1)[:, cell[i]]
        cx, cy = (xs[i] + shift[0]) * stride_x, (ys[i] + shift[1]) * stride_y
        bw, bh = size[0].clamp(min=0) * stride_x, size[1].clamp(min=0) * stride_y
        boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=1)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, image_size[1])
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, image_size[0])
        keep = scores[i] > score_thr
        box_i, score_i, label_i = boxes[keep], scores[i][keep], labels[i][keep]
        kept = batched_nms(box_i, score_i, label_i, nms_iou)[:max_per_img]
        out["box"].append(box_i[kept])
        out["score"].append(score_i[kept])
        out["label"].append(label_i[kept])
    return out

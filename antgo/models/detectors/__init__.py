"""Detectors for the ``{'box', 'label'}`` task form."""
from antgo.models.detectors.center_net import CenterNet
from antgo.models.detectors.postprocess import batched_nms, decode_centernet

__all__ = ["CenterNet", "batched_nms", "decode_centernet"]

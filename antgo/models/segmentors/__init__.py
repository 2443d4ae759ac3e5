"""Segmentation models."""
from antgo.models.segmentors.encoder_decoder import EncoderDecoder

__all__ = ["EncoderDecoder"]

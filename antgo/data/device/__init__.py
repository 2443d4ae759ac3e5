"""Batched augmentation on the training device (see antgo.data.device_pipeline)."""

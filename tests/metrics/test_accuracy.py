"""Accuracy: top-k fractions, streaming vs per-sample call."""
from __future__ import annotations

import numpy as np
import pytest

from antgo.metrics import Accuracy


def test_topk_by_hand():
    scores = np.array([[0.7, 0.2, 0.1],
                       [0.1, 0.3, 0.6],
                       [0.5, 0.4, 0.1],
                       [0.1, 0.3, 0.6]])
    labels = np.array([0, 1, 1, 0])
    metric = Accuracy(topk=(1, 2))
    assert metric.keys() == {"pred": ["pred"], "gt": ["label"]}
    metric.update({"pred": scores}, {"label": labels})
    result = metric.compute()
    assert result["top1"] == pytest.approx(1 / 4)
    assert result["top2"] == pytest.approx(3 / 4)


def test_streaming_equals_call_and_class_indices():
    rng = np.random.default_rng(0)
    scores = rng.random((10, 5))
    labels = rng.integers(0, 5, (10, 1))
    metric = Accuracy(topk=(1, 3))
    one_shot = metric([{"pred": s} for s in scores], [{"label": l} for l in labels])
    metric.reset()
    metric.update({"pred": scores[:7]}, {"label": labels[:7]})
    metric.update({"pred": scores[7:]}, {"label": labels[7:]})
    assert metric.compute() == pytest.approx(one_shot)
    top1 = Accuracy()
    top1.update({"pred": scores.argmax(1)}, {"label": labels})
    assert top1.compute()["top1"] == pytest.approx(one_shot["top1"])


def test_errors():
    with pytest.raises(ValueError):
        Accuracy(topk=0)
    metric = Accuracy()
    with pytest.raises(ValueError, match="3 predictions but 2 labels"):
        metric.update({"pred": np.zeros((3, 2))}, {"label": np.zeros(2)})
    with pytest.raises(KeyError, match="label"):
        metric.update({"pred": np.zeros((3, 2))}, {"y": np.zeros(3)})

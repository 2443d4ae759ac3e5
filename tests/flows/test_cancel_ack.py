"""A cancel that reaches a served run while it writes a file is acknowledged, as at any other moment.

Prefect's runner first asks the run's process over its control channel whether it takes the cancel; the process
says yes only while Prefect's own SIGTERM handler is installed. A refused cancel still ends the process, but the
flow run then ends Crashed, not Cancelled. Swapping that handler out during a checkpoint write made a cancel that
landed then end Crashed.
"""
from __future__ import annotations

import signal
from collections import OrderedDict

import torch
from torch import nn

from antgo.engine.checkpoint import save_checkpoint
from antgo.fileio import atomic_write_text


def _prefect_would_ack() -> bool:
    """Prefect's own decision, made where the control listener makes it; nothing is sent anywhere."""
    from prefect.utilities.engine import commit_control_intent_and_ack

    return commit_control_intent_and_ack(commit_intent=lambda: None, clear_intent=lambda: None,
                                         send_ack=lambda: None)


class _AskPrefectWhenPickled:
    answers: list[bool] = []

    def __reduce__(self):
        self.answers.append(_prefect_would_ack())
        return (OrderedDict, ())  # loads with weights_only


class _Scheduler:
    def state_dict(self):
        return {"probe": _AskPrefectWhenPickled()}


def test_prefect_acknowledges_a_cancel_during_a_checkpoint_write(tmp_path):
    from prefect.utilities.engine import capture_sigterm

    _AskPrefectWhenPickled.answers.clear()
    with capture_sigterm():
        assert _prefect_would_ack()  # the control: Prefect's handler is in place
        save_checkpoint(tmp_path / "latest.pth", nn.Conv2d(1, 1, 1), scheduler=_Scheduler())
    assert _AskPrefectWhenPickled.answers == [True]
    assert torch.load(tmp_path / "latest.pth", weights_only=True)["scheduler"] == {"probe": {}}


def test_prefect_acknowledges_a_cancel_during_a_text_write(tmp_path, monkeypatch):
    """``atomic_write_text``'s write is the moment checked: the open file's ``write`` asks Prefect."""
    import builtins

    from prefect.utilities.engine import capture_sigterm

    answers = []
    real_open = builtins.open

    class _Probe:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

        def write(self, text):
            answers.append(_prefect_would_ack())
            return self.f.write(text)

    def probing_open(path, *args, **kwargs):
        f = real_open(path, *args, **kwargs)
        return _Probe(f) if ".tmp" in str(path) else f

    with capture_sigterm():
        monkeypatch.setattr(builtins, "open", probing_open)
        atomic_write_text(tmp_path / "summary.json", "{}")
        monkeypatch.undo()
    assert answers == [True]
    assert (tmp_path / "summary.json").read_text() == "{}"
    assert signal.getsignal(signal.SIGTERM) is not None

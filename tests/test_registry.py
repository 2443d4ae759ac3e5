"""Registry: registration forms, building, and the errors a user sees for a wrong config."""
from __future__ import annotations

import types

import pytest

from antgo.registry import Registry, RegistryError


@pytest.fixture
def things() -> Registry:
    return Registry("THINGS")


def test_decorator_returns_the_class_unchanged_and_builds(things: Registry) -> None:
    @things.register_module()
    class Conv:
        def __init__(self, channels: int, stride: int = 1) -> None:
            self.channels, self.stride = channels, stride

    assert "Conv" in things and things.get("Conv") is Conv and things.keys() == ["Conv"]
    cfg = {"type": "Conv", "channels": 8}
    obj = things.build(cfg, default_args={"stride": 2, "channels": 99})
    assert (obj.channels, obj.stride) == (8, 2)  # the config wins over default_args
    assert cfg == {"type": "Conv", "channels": 8}  # build never mutates the config


def test_name_list_module_argument_and_class_as_type(things: Registry) -> None:
    def make_pair(a: int = 1) -> tuple[int, int]:
        return a, a

    things.register_module(name=["pair", "Pair"], module=make_pair)
    assert things.build({"type": "pair", "a": 3}) == (3, 3) and things.get("Pair") is make_pair
    assert things.build({"type": make_pair, "a": 4}) == (4, 4)
    assert things.get("missing") is None and len(things) == 2


def test_unknown_type_names_registry_key_path_close_match_and_fix(things: Registry) -> None:
    things.register_module(name="EncoderDecoder", module=dict)
    with pytest.raises(RegistryError) as info:
        things.build({"type": "EncoderDecodr"}, key_path="model")
    message = str(info.value)
    assert "THINGS has no type 'EncoderDecodr'" in message
    assert "'model.type'" in message and "Did you mean: 'EncoderDecoder'" in message
    assert "custom_imports" in message


def test_missing_type_and_non_dict_config(things: Registry) -> None:
    things.register_module(name="A", module=dict)
    with pytest.raises(RegistryError, match="no 'type' key"):
        things.build({"x": 1}, key_path="data.train")
    with pytest.raises(TypeError, match="must be a dict"):
        things.build(["A"], key_path="model")


def test_bad_argument_names_the_class_and_key_path(things: Registry) -> None:
    @things.register_module()
    class Head:
        def __init__(self, channels: int) -> None:
            self.channels = channels

    with pytest.raises(TypeError, match=r"building Head at config key 'model.decode_head' failed:.*chanels"):
        things.build({"type": "Head", "chanels": 3}, key_path="model.decode_head")


def test_a_quoted_number_names_the_argument_when_building_fails(things: Registry) -> None:
    @things.register_module()
    class Metric:
        def __init__(self, class_num: int = 2) -> None:
            self.classes = list(range(class_num))  # TypeError for '3'

    with pytest.raises(TypeError, match=r"evaluation\.metric\.class_num is the string '3' where Metric takes a "
                                        r"number: write class_num=3 without quotes"):
        things.build({"type": "Metric", "class_num": "3"}, key_path="evaluation.metric")


def test_duplicate_user_names_conflict_unless_forced(things: Registry) -> None:
    first = type("Net", (), {"__module__": "pkg_a"})
    second = type("Net", (), {"__module__": "pkg_b"})
    things.register_module(module=first)
    with pytest.raises(RegistryError, match="already registered to pkg_a.Net"):
        things.register_module(module=second)
    things.register_module(module=second, force=True)
    assert things.get("Net") is second


def test_user_class_may_take_over_a_builtin_name(things: Registry) -> None:
    builtin = type("SegMIOU", (), {"__module__": "antgo.metrics.segmentation"})
    user = type("SegMIOU", (), {"__module__": "my_metrics"})
    reloaded = type("SegMIOU", (), {"__module__": "my_metrics"})
    things.register_module(module=builtin)
    things.register_module(module=user)  # the design document's samples re-declare built-in names
    assert things.get("SegMIOU") is user
    things.register_module(module=reloaded)  # a re-imported user module re-registers its own class
    assert things.get("SegMIOU") is reloaded


def test_only_callables_register(things: Registry) -> None:
    with pytest.raises(TypeError, match="only classes or functions"):
        things.register_module(name="x", module=types.SimpleNamespace())


@pytest.mark.parametrize("typo", ["SegMiou", "segmiou", "SEGMIOU"])
def test_case_only_typo_gets_a_suggestion_and_the_list_command(typo: str) -> None:
    from antgo.metrics import SegMIOU  # registers it
    from antgo.registry import METRICS

    assert METRICS.get("SegMIOU") is SegMIOU

    with pytest.raises(RegistryError) as info:
        METRICS.build({"type": typo, "class_num": 3}, key_path="evaluation.metric")
    message = str(info.value)
    assert "Did you mean: 'SegMIOU'" in message and "`python -m antgo list metrics` lists them all" in message

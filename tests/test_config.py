"""Tests for antgo.config: loading, inheritance, overrides, errors, access, copying and dumping."""
from __future__ import annotations

import copy
import logging
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from antgo.config import KNOWN_TOP_LEVEL_KEYS, Config, ConfigDict, ConfigError, parse_cfg_options

# The design document's pascal voc config, as shipped in configs/ (plus log/checkpoint/export sections).
PASCAL_CONFIG = (Path(__file__).resolve().parents[1] / "configs" / "pascal_voc" / "ddrketnetf_voc.py").read_text()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def pascal(tmp_path: Path) -> Path:
    return write(tmp_path / "pascal.py", PASCAL_CONFIG)


# ---------------------------------------------------------------------------------------------------------
# loading


def test_fromfile_collects_public_variables_only(tmp_path: Path) -> None:
    path = write(tmp_path / "cfg.py", """
        import os
        from collections import OrderedDict
        def helper(x):
            return x * 2
        class Local:
            pass
        _private = 3
        seed = helper(21)
        work_dir = os.path.join('out', 'run')
        my_variable = 'kept'
        here = __file__
    """)
    cfg = Config.fromfile(path)
    assert set(cfg.keys()) == {"seed", "work_dir", "my_variable", "here"}
    assert cfg.seed == 42
    assert cfg.here == str(path)
    assert cfg.filename == str(path.resolve())
    assert "my_variable = 'kept'" in cfg.text


def test_config_from_dict_and_filename(tmp_path: Path) -> None:
    cfg = Config(dict(model=dict(type="Net", layers=[dict(a=1)])))
    assert cfg.filename is None and cfg.text == ""
    assert cfg.model.layers[0].a == 1
    named = Config({"seed": 1}, filename="relative.py")
    assert Path(named.filename).is_absolute()
    with pytest.raises(ConfigError, match="takes a dict"):
        Config([("a", 1)])  # type: ignore[arg-type]


def test_import_does_not_load_heavy_packages() -> None:
    code = ("import sys, antgo.config; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'prefect', 'mlflow')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Config.fromfile(tmp_path / "nope.py")


# ---------------------------------------------------------------------------------------------------------
# inheritance


def test_single_base_with_recursive_merge(tmp_path: Path) -> None:
    write(tmp_path / "base.py", """
        optimizer = dict(type='SGD', lr=0.1, momentum=0.9)
        max_epochs = 10
    """)
    path = write(tmp_path / "child.py", """
        _base_ = './base.py'
        optimizer = dict(lr=0.01)
        seed = 1
    """)
    cfg = Config.fromfile(path)
    assert cfg.to_dict() == {"optimizer": {"type": "SGD", "lr": 0.01, "momentum": 0.9}, "max_epochs": 10, "seed": 1}
    assert "_base_" not in cfg
    assert str(tmp_path / "base.py") in cfg.text and "seed = 1" in cfg.text
    assert cfg.text.index("max_epochs = 10") < cfg.text.index("seed = 1")  # bases first


def test_list_of_bases_later_overrides_earlier(tmp_path: Path) -> None:
    write(tmp_path / "a.py", "model = dict(type='A', depth=18)\nseed = 1\n")
    write(tmp_path / "sub" / "b.py", "model = dict(type='B')\nseed = 2\nmax_epochs = 3\n")
    path = write(tmp_path / "child.py", "_base_ = ['a.py', 'sub/b.py']\nmax_epochs = 5\n")
    cfg = Config.fromfile(path)
    assert cfg.model.to_dict() == {"type": "B", "depth": 18}
    assert cfg.seed == 2 and cfg.max_epochs == 5


def test_nested_bases_resolve_relative_to_each_file(tmp_path: Path) -> None:
    write(tmp_path / "_base_" / "root.py", "optimizer = dict(type='SGD', lr=0.1)\nlog_level = 'INFO'\n")
    write(tmp_path / "_base_" / "mid.py", "_base_ = './root.py'\noptimizer = dict(lr=0.2, momentum=0.9)\n")
    path = write(tmp_path / "exp" / "leaf.py", "_base_ = '../_base_/mid.py'\noptimizer = dict(lr=0.3)\n")
    cfg = Config.fromfile(path)
    assert cfg.optimizer.to_dict() == {"type": "SGD", "lr": 0.3, "momentum": 0.9}
    assert cfg.log_level == "INFO"


def test_delete_replaces_instead_of_merging(tmp_path: Path) -> None:
    write(tmp_path / "base.py", "optimizer = dict(type='SGD', lr=0.1, momentum=0.9, nesterov=True)\n")
    path = write(tmp_path / "child.py", """
        _base_ = 'base.py'
        optimizer = dict(_delete_=True, type='AdamW', lr=1e-3)
        model = dict(type='M', head=dict(_delete_=False, x=1))
    """)
    cfg = Config.fromfile(path)
    assert cfg.optimizer.to_dict() == {"type": "AdamW", "lr": 1e-3}
    assert cfg.model.head.to_dict() == {"x": 1}  # leftover _delete_ keys never reach the config


def test_missing_base_names_referencing_file(tmp_path: Path) -> None:
    path = write(tmp_path / "child.py", "_base_ = ['./missing_base.py']\n")
    with pytest.raises(ConfigError) as info:
        Config.fromfile(path)
    assert "missing_base.py" in str(info.value) and str(path) in str(info.value)


def test_cyclic_bases(tmp_path: Path) -> None:
    write(tmp_path / "a.py", "_base_ = 'b.py'\nseed = 1\n")
    write(tmp_path / "b.py", "_base_ = 'a.py'\nseed = 2\n")
    with pytest.raises(ConfigError, match="cyclic _base_"):
        Config.fromfile(tmp_path / "a.py")


def test_bad_base_value(tmp_path: Path) -> None:
    path = write(tmp_path / "c.py", "_base_ = 3\n")
    with pytest.raises(ConfigError, match="_base_ must be a path"):
        Config.fromfile(path)


# ---------------------------------------------------------------------------------------------------------
# custom_imports


def test_custom_imports_imports_module_and_keeps_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "pkg_for_cfg_test" / "__init__.py", "")
    write(tmp_path / "pkg_for_cfg_test" / "models.py", "import builtins\nbuiltins._antgo_cfg_imported = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "pkg_for_cfg_test.models", raising=False)
    monkeypatch.setattr("builtins._antgo_cfg_imported", False, raising=False)
    path = write(tmp_path / "cfg.py", "custom_imports = dict(imports=['pkg_for_cfg_test.models'], "
                                      "allow_failed_imports=False)\n")
    cfg = Config.fromfile(path)
    import builtins
    assert builtins._antgo_cfg_imported is True  # type: ignore[attr-defined]
    assert "pkg_for_cfg_test.models" in sys.modules
    assert cfg.custom_imports.imports == ["pkg_for_cfg_test.models"]


def test_custom_imports_failure_names_module_file_and_pythonpath(tmp_path: Path) -> None:
    path = write(tmp_path / "cfg.py", "custom_imports = dict(imports=['no_such_pkg_xyz.models'])\n")
    with pytest.raises(ConfigError) as info:
        Config.fromfile(path)
    message = str(info.value)
    assert "no_such_pkg_xyz.models" in message and str(path) in message and "PYTHONPATH" in message


def test_custom_imports_finds_a_module_beside_the_config_from_any_folder(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # the flow script puts only its repository on sys.path: a plugin beside the user's config must still import
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", os.getcwd())])
    monkeypatch.chdir(tmp_path.parent)
    monkeypatch.delitem(sys.modules, "beside_cfg_plugin", raising=False)
    write(tmp_path / "beside_cfg_plugin.py", "VALUE = 7\n")
    Config.fromfile(write(tmp_path / "cfg.py", "custom_imports = dict(imports=['beside_cfg_plugin'])\n"))
    assert sys.modules["beside_cfg_plugin"].VALUE == 7


def test_custom_imports_allow_failed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path / "cfg.py", "custom_imports = dict(imports='no_such_pkg_xyz', allow_failed_imports=True)\n")
    with caplog.at_level(logging.WARNING, logger="antgo.config"):
        cfg = Config.fromfile(path)
    assert cfg.custom_imports.allow_failed_imports is True
    assert "no_such_pkg_xyz" in caplog.text


# ---------------------------------------------------------------------------------------------------------
# overrides


def test_overrides_nested_list_index_and_echo(pascal: Path, caplog: pytest.LogCaptureFixture) -> None:
    options = ["optimizer.lr=0.01", "data.train.pipeline.1.target_dim=[128,128]", "data.train.dir=/data/voc"]
    with caplog.at_level(logging.INFO, logger="antgo.config"):
        cfg = Config.fromfile(pascal, cfg_options=options)
    assert cfg.optimizer.lr == 0.01
    assert cfg.data.train.pipeline[1].target_dim == (128, 128)  # the old value was a tuple: stays a tuple
    assert cfg.data.train.dir == "/data/voc"  # not a literal: kept as the raw string
    assert cfg.data.val.pipeline[0].target_dim == (256, 256)
    assert "optimizer.lr" in caplog.text and "0.05" in caplog.text and "0.01" in caplog.text


def test_overrides_dict_form_and_merge_from_dict(pascal: Path) -> None:
    cfg = Config.fromfile(pascal, cfg_options={"optimizer.lr": 0.02, "optimizer_config.grad_clip": dict(max_norm=5)})
    assert cfg.optimizer.lr == 0.02
    assert cfg.optimizer_config.grad_clip.max_norm == 5  # None accepts anything
    cfg.merge_from_dict({"model.decode_head.out_channels": 2, "evaluation.metric.class_num": 2,
                         "data.train.pipeline.-1.axis": 1, "lr_config.warmup": None})
    assert cfg.model.decode_head.out_channels == 2 and cfg.evaluation.metric.class_num == 2
    assert cfg.data.train.pipeline[6].axis == 1 and cfg.lr_config.warmup is None


def test_override_inside_tuple_rebuilds_it() -> None:
    cfg = Config(dict(norm=dict(mean=(0.1, 0.2, 0.3))))
    cfg.merge_from_dict({"norm.mean.1": 0.5})
    assert cfg.norm.mean == (0.1, 0.5, 0.3)


def test_override_numeric_and_sequence_compatibility() -> None:
    cfg = Config(dict(lr=0.1, epochs=10, size=[1, 2], flag=True))
    cfg.merge_from_dict({"lr": 1, "epochs": 2.5, "size": (3, 4), "flag": False})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.epochs == 2.5
    assert cfg.size == [3, 4] and isinstance(cfg.size, list)
    assert cfg.flag is False


def test_parse_cfg_options() -> None:
    parsed = parse_cfg_options(["a.b=1", "c=[1, 2]", "d=abc", "e=1,2", "f='x=y'", "+g.h=None", "i=1e-5"])
    assert parsed == {"a.b": 1, "c": [1, 2], "d": "abc", "e": (1, 2), "f": "x=y", "+g.h": None, "i": 1e-5}
    with pytest.raises(ConfigError, match="key=value"):
        parse_cfg_options(["optimizer.lr"])


def test_new_key_needs_plus_or_allow_new(pascal: Path) -> None:
    cfg = Config.fromfile(pascal, cfg_options=["+optimizer.foo=3", "+tracking.run.name=exp1"])
    assert cfg.optimizer.foo == 3 and cfg.tracking.run.name == "exp1"
    cfg.merge_from_dict({"model.neck": dict(type="FPN")}, allow_new=True)
    assert cfg.model.neck.type == "FPN"
    with pytest.raises(ConfigError, match=r"\+model.neck2"):
        cfg.merge_from_dict({"model.neck2": 1})


def test_unknown_override_path_names_key_and_close_match(pascal: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Config.fromfile(pascal, cfg_options=["data.train.pipline.1.target_dim=[1,1]"])
    message = str(info.value)
    assert "data.train.pipline.1.target_dim" in message
    assert "under 'data.train'" in message and "'pipeline'" in message and str(pascal) in message


def test_override_index_out_of_range(pascal: Path) -> None:
    with pytest.raises(ConfigError, match=r"index 7 is out of range for 'data.train.pipeline'.*length 7"):
        Config.fromfile(pascal, cfg_options=["data.train.pipeline.7.type=X"])
    with pytest.raises(ConfigError, match="use a number"):
        Config.fromfile(pascal, cfg_options=["data.train.pipeline.first.type=X"])
    with pytest.raises(ConfigError, match=r"indexes a list with brackets.*'data\.train\.pipeline\.1\.type'"):
        Config.fromfile(pascal, cfg_options=["data.train.pipeline[1].type=X"])


def test_override_wrong_type(pascal: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Config.fromfile(pascal, cfg_options=["optimizer.lr=fast"])
    message = str(info.value)
    assert "optimizer.lr" in message and "float" in message and "str" in message
    with pytest.raises(ConfigError, match="expects bool"):
        Config.fromfile(pascal, cfg_options=["optimizer.nesterov=1"])
    with pytest.raises(ConfigError, match="expects str"):
        Config.fromfile(pascal, cfg_options=["model.type=3"])
    with pytest.raises(ConfigError, match="expects dict"):
        Config.fromfile(pascal, cfg_options=["model.backbone=resnet"])


def test_override_into_scalar_is_an_error(pascal: Path) -> None:
    with pytest.raises(ConfigError, match="'optimizer.lr' is a float"):
        Config.fromfile(pascal, cfg_options=["optimizer.lr.value=1"])


# ---------------------------------------------------------------------------------------------------------
# validation and file errors


def test_misspelled_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path / "cfg.py", "optimzer = dict(type='SGD', lr=0.1)\n")
    with pytest.raises(ConfigError) as info:
        Config.fromfile(path)
    assert str(path) in str(info.value)
    assert "unknown top-level key 'optimzer'; did you mean 'optimizer'?" in str(info.value)


def test_misspelled_key_in_base_names_the_base(tmp_path: Path) -> None:
    base = write(tmp_path / "base.py", "lr_cfg = dict(policy='step')\n")
    path = write(tmp_path / "child.py", "_base_ = 'base.py'\n")
    with pytest.raises(ConfigError, match="lr_config") as info:
        Config.fromfile(path)
    assert str(base) in str(info.value)


def test_unrelated_user_key_allowed_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path / "cfg.py", "img_scale = (512, 512)\noptimizer = dict(type='SGD')\n")
    with caplog.at_level(logging.DEBUG, logger="antgo.config"):
        cfg = Config.fromfile(path)
    assert cfg.img_scale == (512, 512)
    assert "img_scale" in caplog.text


def test_known_top_level_keys_cover_the_design_document() -> None:
    for key in ("optimizer", "lr_config", "log_config", "model", "checkpoint_config", "data", "evaluation",
                "export", "custom_imports", "_base_", "mlflow", "prefect", "class_names"):
        assert key in KNOWN_TOP_LEVEL_KEYS


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "cfg.py", "seed = 1\nmodel = dict(type='A',\noptimizer = 3 3\n")
    with pytest.raises(ConfigError) as info:
        Config.fromfile(path)
    assert str(path) in str(info.value) and "line" in str(info.value)
    assert "syntax error" in str(info.value)


def test_runtime_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "cfg.py", "seed = 1\n\nmodel = dict(depth=undefined_name)\n")
    with pytest.raises(ConfigError, match=r"line 3: executing it raised NameError"):
        Config.fromfile(path)


def test_check_required(pascal: Path) -> None:
    cfg = Config.fromfile(pascal)
    cfg.check_required("model", "data.train.pipeline.0.type", "optimizer.lr")
    with pytest.raises(ConfigError) as info:
        cfg.check_required("model", "seed", "data.test.missing")
    message = str(info.value)
    assert "seed" in message and "data.test.missing" in message and str(pascal) in message
    assert "model," not in message


# ---------------------------------------------------------------------------------------------------------
# access


def test_attribute_and_mapping_access(pascal: Path) -> None:
    cfg = Config.fromfile(pascal)
    assert cfg.data.train.pipeline[1].target_dim == (256, 256)
    assert isinstance(cfg.data.train.pipeline, list) and isinstance(cfg.data.train.pipeline[5].mean, tuple)
    assert isinstance(cfg.model, ConfigDict) and isinstance(cfg.model, dict)
    assert isinstance(cfg.data.train.pipeline[0], ConfigDict)
    assert cfg["optimizer"]["lr"] == 0.05 and cfg.get("seed", 7) == 7 and cfg.get("model") is cfg.model
    assert "model" in cfg and "seed" not in cfg
    assert list(cfg) == list(cfg.keys()) == ["optimizer", "optimizer_config", "lr_config", "model", "data",
                                             "evaluation", "log_config", "checkpoint_config", "export", "max_epochs"]
    assert len(cfg) == 10 and dict(cfg.items())["model"] is cfg.model
    assert cfg.data.train.pipeline[4]["keys"] == ["image"]  # 'keys' shadows dict.keys: use []
    cfg.seed = 3
    cfg.model.neck = dict(type="FPN", levels=[dict(a=1)])
    assert cfg["seed"] == 3 and cfg.model.neck.levels[0].a == 1
    cfg.model.update(extra=dict(b=2))
    cfg.model.setdefault("more", dict(c=3))
    assert cfg.model.extra.b == 2 and cfg.model.more.c == 3
    with pytest.raises(AttributeError, match="use cfg"):
        cfg.filename = "x.py"


def test_missing_attribute_names_key_and_close_match(pascal: Path) -> None:
    cfg = Config.fromfile(pascal)
    with pytest.raises(AttributeError, match=r"'optimzer'.*'optimizer'"):
        cfg.optimzer  # noqa: B018
    with pytest.raises(AttributeError, match=r"'backbon'.*'backbone'"):
        cfg.model.backbon  # noqa: B018
    with pytest.raises(KeyError, match="optimizer"):
        cfg["optimzer"]


def test_registry_build_accepts_config_dict() -> None:
    from antgo.registry import Registry

    registry = Registry("TEST")

    @registry.register_module()
    class Thing:
        def __init__(self, size, inner):
            self.size, self.inner = size, inner

    cfg = Config(dict(thing=dict(type="Thing", size=(1, 2), inner=dict(a=1))))
    thing = registry.build(cfg.thing)
    assert thing.size == (1, 2) and thing.inner == {"a": 1}
    assert cfg.thing.type == "Thing"  # build does not mutate the config


def test_deepcopy_and_pickle(pascal: Path) -> None:
    cfg = Config.fromfile(pascal)
    clone = copy.deepcopy(cfg)
    clone.data.train.pipeline[1].target_dim = (1, 1)
    assert cfg.data.train.pipeline[1].target_dim == (256, 256)
    assert clone.filename == cfg.filename and clone.text == cfg.text
    restored = pickle.loads(pickle.dumps(cfg))
    assert restored == cfg and restored.to_dict() == cfg.to_dict()
    assert isinstance(restored.data.train, ConfigDict) and restored.data.train.pipeline[1].target_dim == (256, 256)
    assert restored.filename == cfg.filename
    sub = pickle.loads(pickle.dumps(cfg.model))
    assert isinstance(sub, ConfigDict) and sub.backbone.type == "DDRKetNetF"
    assert copy.copy(cfg).model is cfg.model


def test_to_dict_is_plain(pascal: Path) -> None:
    plain = Config.fromfile(pascal).to_dict()

    def walk(value):
        if isinstance(value, dict):
            assert type(value) is dict
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)

    walk(plain)
    assert plain["data"]["train"]["pipeline"][1] == {"type": "ResizeS", "target_dim": (256, 256)}


# ---------------------------------------------------------------------------------------------------------
# dump and flatten


def test_dump_round_trip_pascal(pascal: Path, tmp_path: Path) -> None:
    cfg = Config.fromfile(pascal, cfg_options=["optimizer.lr=0.01"])
    out = cfg.dump(tmp_path / "out" / "config.py")
    again = Config.fromfile(out)
    assert again.to_dict() == cfg.to_dict()
    assert again.data.train.pipeline[5].mean == (0.4914, 0.482158, 0.4465231)
    assert again.optimizer.lr == 0.01
    assert Path(out).read_text() == cfg.pretty_text


def test_dump_round_trip_tricky_values(tmp_path: Path) -> None:
    values = dict(
        class_names=("background",),
        export=dict(names=[], empty=dict(), shapes=[(1, 3, 8, 8)], quote="it's \"quoted\"", tiny=1e-5,
                    neg=-0.0, big=10 ** 20, inf=float("inf"), flags=[True, False, None]),
        data={"mapping": {0: "bg", 1: "fg"}, "nested": [dict(a=[dict(b=(1,))])], "long": list(range(60))},
    )
    cfg = Config(values)
    again = Config.fromfile(cfg.dump(tmp_path / "c.py"))
    assert again.to_dict() == cfg.to_dict()
    assert again.class_names == ("background",) and again.data.mapping[1] == "fg"
    assert again.export.tiny == 1e-5 and again.export.inf == float("inf")


def test_dump_class_value_as_import(tmp_path: Path) -> None:
    cfg = Config(dict(model=dict(type=Path, other=len)))
    text = cfg.pretty_text
    assert "import pathlib" in text and "type=pathlib.Path" in text
    assert Config.fromfile(cfg.dump(tmp_path / "c.py")).model.type is Path


def test_dump_rejects_unwritable_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'model.weights'"):
        Config(dict(model=dict(weights=object()))).pretty_text  # noqa: B018
    with pytest.raises(ConfigError, match="must end in .py"):
        Config(dict(seed=1)).dump(tmp_path / "c.json")
    with pytest.raises(ConfigError, match="top-level key"):
        Config({"my-key": 1}).pretty_text  # noqa: B018


def test_flatten(pascal: Path) -> None:
    flat = Config.fromfile(pascal).flatten()
    assert flat["optimizer.lr"] == 0.05
    assert flat["data.train.pipeline.0.type"] == "Rotation"
    assert flat["data.train.pipeline.1.target_dim.0"] == 256
    assert flat["data.train.pipeline.3.swap_ids"] == []
    assert flat["optimizer_config.grad_clip"] is None
    assert all(not isinstance(v, dict) for v in flat.values())

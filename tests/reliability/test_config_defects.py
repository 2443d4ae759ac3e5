"""The config defects found against mmengine's Config fixtures, and the one config loader."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch

from antgo.config import Config, ConfigError, load_config
from antgo.engine.optim import build_optimizer


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_class_value_survives_dump_and_load(tmp_path: Path) -> None:
    path = write(tmp_path / "cfg.py", """
        import torch
        optimizer = dict(type=torch.optim.SGD, lr=0.1)
        model = dict(type='M', act=torch.nn.ReLU)
    """)
    cfg = Config.fromfile(path)
    again = Config.fromfile(cfg.dump(tmp_path / "dumped.py"))
    assert again.optimizer.type is torch.optim.SGD and again.model.act is torch.nn.ReLU
    assert "torch.optim.SGD" in (tmp_path / "dumped.py").read_text()
    assert isinstance(build_optimizer(torch.nn.Linear(2, 2), again.optimizer), torch.optim.SGD)


@pytest.mark.parametrize("how", ["dict", "cli"])
def test_delete_inside_an_override_value_replaces_the_dict(how: str) -> None:
    cfg = Config(dict(optimizer=dict(type="SGD", lr=0.1, momentum=0.9, nesterov=True)))
    if how == "dict":
        cfg.merge_from_dict({"optimizer": dict(_delete_=True, type="Adam", lr=1e-3)})
    else:
        cfg.merge_from_dict(["optimizer={'_delete_': True, 'type': 'Adam', 'lr': 0.001}"])
    assert cfg.optimizer.to_dict() == {"type": "Adam", "lr": 1e-3}
    assert isinstance(build_optimizer(torch.nn.Linear(2, 2), cfg.optimizer), torch.optim.Adam)


def test_dict_override_without_delete_merges_and_drops_nested_delete() -> None:
    cfg = Config(dict(model=dict(type="M", head=dict(type="H", ch=3, drop=0.1))))
    cfg.merge_from_dict({"model": dict(head=dict(_delete_=True, type="H2"))})
    assert cfg.model.to_dict() == {"type": "M", "head": {"type": "H2"}}
    cfg.merge_from_dict({"model.head": dict(ch=5)})
    assert cfg.model.head.to_dict() == {"type": "H2", "ch": 5}


def test_predefined_variables_are_substituted_as_mmengine_does(tmp_path: Path) -> None:
    path = write(tmp_path / "exp" / "my_exp.py", """
        work_dir = './work_dirs/{{ fileBasenameNoExtension }}'
        names = ['{{fileBasename}}', '{{ fileDirname }}', '{{ fileExtname }}']
    """)
    cfg = Config.fromfile(path)
    assert cfg.work_dir == "./work_dirs/my_exp"
    assert cfg.names == ["my_exp.py", str(tmp_path / "exp"), ".py"]


def test_mmengine_predefined_var_fixture_loads_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mmengine's tests/data/config/py_config/test_predefined_var.py, plus its environment-variable form."""
    path = write(tmp_path / "test_predefined_var.py", """
        item1 = '{{fileBasename}}'
        item2 = '{{ fileDirname}}'
        item3 = 'abc_{{ fileBasenameNoExtension }}'
        item4 = '{{ $MMENGINE:/unit/test }}'
        epochs = {{'$ANTGO_TEST_EPOCHS:3'}}
    """)
    monkeypatch.delenv("MMENGINE", raising=False)
    monkeypatch.setenv("ANTGO_TEST_EPOCHS", "7")
    cfg = Config.fromfile(path)
    assert cfg.to_dict() == {"item1": "test_predefined_var.py", "item2": str(tmp_path),
                             "item3": "abc_test_predefined_var", "item4": "/unit/test", "epochs": 7}


def test_unset_environment_variable_without_default_is_an_error(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTGO_NOT_SET", raising=False)
    path = write(tmp_path / "cfg.py", "seed = 1\ntoken = '{{ $ANTGO_NOT_SET }}'\n")
    with pytest.raises(ConfigError, match=r"line 2: environment variable ANTGO_NOT_SET is not set.*export"):
        Config.fromfile(path)


def test_base_file_placeholders_name_the_base(tmp_path: Path) -> None:
    write(tmp_path / "base.py", "work_dir = 'w/{{ fileBasenameNoExtension }}'\n")
    child = write(tmp_path / "child.py", "_base_ = 'base.py'\nseed = 1\n")
    assert Config.fromfile(child).work_dir == "w/base"  # the file that holds the placeholder


def test_unknown_placeholder_is_an_error_not_a_literal(tmp_path: Path) -> None:
    path = write(tmp_path / "cfg.py", "seed = 1\nitem = '{{ _base_.item }}'\n")
    with pytest.raises(ConfigError, match=r"line 2: placeholder '\{\{ _base_.item \}\}' is not supported"):
        Config.fromfile(path)


def test_typo_check_accepts_openmmlab_keys(tmp_path: Path) -> None:
    path = write(tmp_path / "cfg.py", """
        pipeline = [dict(type='LoadImageFromFile')]
        tta_pipeline = [dict(type='TestTimeAug', transforms=[])]
        class_name = ('cat', 'dog')
        checkpoint_file = 'model.pth'
        train_dataloader = dict(batch_size=2)
        optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1))
        param_scheduler = [dict(type='LinearLR')]
        val_evaluator = dict(type='Accuracy')
    """)
    cfg = Config.fromfile(path)
    assert cfg.pipeline[0].type == "LoadImageFromFile" and cfg.class_name == ("cat", "dog")
    assert cfg.checkpoint_file == "model.pth" and cfg.tta_pipeline[0].type == "TestTimeAug"


def test_typo_escape_keeps_the_key(tmp_path: Path) -> None:
    path = write(tmp_path / "cfg.py", "optimizer_cfg = dict(lr=1)\n")
    with pytest.raises(ConfigError, match=r"custom_keys = \['optimizer_cfg'\]"):
        Config.fromfile(path)
    path.write_text("custom_keys = ['optimizer_cfg']\noptimizer_cfg = dict(lr=1)\n_helper = 3\n")
    cfg = Config.fromfile(path)
    assert cfg.optimizer_cfg.lr == 1  # declared: kept
    assert "_helper" not in cfg  # '_' names stay helper variables, as documented
    dumped = Config.fromfile(cfg.dump(tmp_path / "again.py"))
    assert dumped.optimizer_cfg.lr == 1


def test_load_config_applies_custom_imports_for_dicts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "my_plugin_i8" / "__init__.py", "LOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_plugin_i8", raising=False)
    cfg = load_config(dict(custom_imports=dict(imports=["my_plugin_i8"]), seed=1))
    assert "my_plugin_i8" in sys.modules and isinstance(cfg, Config)
    with pytest.raises(ConfigError, match="did you mean 'optimizer'"):
        load_config(dict(optimzer=dict(lr=1)))  # a dict is validated like a file


@pytest.mark.parametrize("user", ["exporter", "parity", "tester", "trainer"])
def test_every_engine_entry_imports_custom_modules_of_dict_configs(user: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Exporter and parity used to skip custom_imports for dict configs."""
    from antgo.engine import Exporter, Tester, Trainer, verify_parity

    name = f"plugin_for_{user}_i8"
    write(tmp_path / name / "__init__.py", "")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    cfg = dict(custom_imports=dict(imports=[name]), seed=0)
    if user == "exporter":
        Exporter(cfg, str(tmp_path))
    elif user == "tester":
        Tester(cfg, str(tmp_path), device="cpu")
    elif user == "trainer":
        Trainer(cfg, str(tmp_path), device="cpu")
    else:
        with pytest.raises(FileNotFoundError, match="run the export first"):
            verify_parity(cfg, str(tmp_path / "missing.onnx"))
    assert name in sys.modules

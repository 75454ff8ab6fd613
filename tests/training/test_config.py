"""Configuration: files, overrides, and errors that name the key."""

from __future__ import annotations

import json

import pytest

from tripletkit.training.config import RunConfig, config_keys, resolve_config


def test_defaults_round_trip_through_json(tmp_path):
    config = resolve_config()
    config.save(tmp_path / "config.json")
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["loss"]["margin"] is None and data["data"]["p"] == 5
    flat = {f"{s}.{k}": v for s, section in data.items() for k, v in section.items()}
    assert resolve_config(overrides=flat) == config


def test_yaml_then_toml_then_flags(tmp_path):
    (tmp_path / "a.yaml").write_text("loss:\n  margin: 0.5\n  mining: hard\ntrain:\n  epochs: 3\n")
    (tmp_path / "b.toml").write_text('[loss]\nmining = "semihard"\n[data]\nk = 8\n')
    config = resolve_config(
        [tmp_path / "a.yaml", tmp_path / "b.toml"], {"train.epochs": "7", "data.augment": "false"}
    )
    assert config.loss.margin == 0.5
    assert config.loss.mining == "semihard"
    assert config.data.k == 8
    assert config.train.epochs == 7
    assert config.data.augment is False


def test_lists_dicts_and_none_from_strings():
    config = resolve_config(
        overrides={
            "data.train_classes": "0,1,2",
            "loss.options": '{"temperature": 0.1}',
            "optim.grad_clip": "none",
            "model.projector": "512, 128",
        }
    )
    assert config.data.train_classes == [0, 1, 2]
    assert config.model.projector == [512, 128]
    assert config.loss.options == {"temperature": 0.1}
    assert config.optim.grad_clip is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"loss.margn": 0.1}, "unknown config key 'loss.margn'; did you mean 'loss.margin'?"),
        ({"trian.epochs": 1}, "did you mean 'train.epochs'?"),
        ({"train.epochs": "three"}, "config key 'train.epochs' must be an integer; got 'three'"),
        ({"train.epochs": 2.5}, "must be an integer"),
        ({"data.augment": "maybe"}, "'data.augment' must be true or false"),
        ({"train.precision": "fp8"}, "'train.precision' must be one of 'fp32', 'bf16', 'fp16'"),
        ({"data.k": 1}, "'data.k' must be >= 2"),
        ({"loss.margin": -0.1}, "'loss.margin' must be >= 0"),
        ({"optim.lr": 0}, "'optim.lr' must be > 0"),
        ({"model.projector": "512,0"}, "config key 'model.projector': projector widths must be"),
        ({"model.projector": "512,x"}, "'model.projector' must be an integer; got 'x'"),
    ],
)
def test_bad_keys_and_values_are_named(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("?", r"\?")):
        resolve_config(overrides=overrides)


def test_bad_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        resolve_config([tmp_path / "missing.yaml"])
    (tmp_path / "c.ini").write_text("x")
    with pytest.raises(ValueError, match=r"unknown format '\.ini'"):
        resolve_config([tmp_path / "c.ini"])
    (tmp_path / "d.yaml").write_text("loss: [unclosed\n")
    with pytest.raises(ValueError, match="is not valid YAML"):
        resolve_config([tmp_path / "d.yaml"])
    (tmp_path / "e.yaml").write_text("loss:\n  mining: hard\n  bogus: 1\n")
    with pytest.raises(ValueError, match=r"unknown config key 'loss\.bogus'"):
        resolve_config([tmp_path / "e.yaml"])


def test_every_key_is_documented_by_its_section():
    assert "loss.margin" in config_keys()
    for section in ("data", "model", "loss", "optim", "train"):
        assert getattr(RunConfig(), section).__doc__


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data = 3\n", "config section 'data' must be a mapping of its keys"),
        ("[data]\npp = 3\n", "unknown config key 'data.pp'; did you mean 'data.p'?"),
        ("[data]\np = 'many'\n", "config key 'data.p' must be an integer"),
        ("[optim]\nschedule = 'linear'\n", "config key 'optim.schedule' must be one of"),
        # Range errors, checked after every key is set, name the file that set the key.
        ("[data]\np = 0\n", "config key 'data.p' must be > 0; got 0"),
        ("[data]\nk = 1\n", "config key 'data.k' must be >= 2"),
        ("[loss]\nmargin = -0.5\n", "config key 'loss.margin' must be >= 0"),
        ("[model]\nprojector_frozen = true\n", "config key 'model.projector_frozen' is true"),
    ],
)
def test_errors_from_a_config_file_name_the_file(tmp_path, text, message):
    path = tmp_path / "run.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as caught:
        resolve_config([path])
    assert str(caught.value).startswith(f"config file {str(path)!r}: ")
    assert message in str(caught.value)


def test_a_flag_that_overrides_a_bad_file_value_is_what_the_error_names(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[data]\np = 'many'\n")
    assert resolve_config([path], {"data.p": 4}).data.p == 4  # the flag wins: no error
    with pytest.raises(ValueError) as caught:
        resolve_config([path], {"data.p": "few"})
    assert "config file" not in str(caught.value) and "'few'" in str(caught.value)


def test_a_range_error_of_a_flag_names_no_file_though_a_file_set_other_keys(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[data]\np = 4\n[train]\nepochs = 2\n")
    with pytest.raises(ValueError) as caught:
        resolve_config([path], {"data.k": 1})
    assert str(caught.value).startswith("config key 'data.k' must be >= 2")
    with pytest.raises(ValueError) as caught:  # the flag replaced the file's good value
        resolve_config([path], {"data.p": 0})
    assert str(caught.value).startswith("config key 'data.p' must be > 0")

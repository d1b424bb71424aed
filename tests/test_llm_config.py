"""RunConfig: parsing, round trips, overrides and the validation of every section."""

from __future__ import annotations

import json
import math

import pytest

from overparam.errors import ConfigError
from overparam.llm.config import RunConfig, all_config_keys
from overparam.llm.config_parsing import convert_value
from overparam.llm.presets import PRESETS


def test_config_dict_round_trip():
    config = RunConfig().with_overrides(
        {"optim.betas": "0.8,0.99", "decomposition.targets": "q_proj,v_proj"}
    )
    assert RunConfig.from_dict(config.to_dict()) == config
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("optim.lr", "1e-3", 1e-3),
        ("optim.betas", "0.8,0.99", (0.8, 0.99)),
        ("optim.betas", "(0.5, 0.6)", (0.5, 0.6)),
        ("train.max_steps", "1_000", 1000),
        ("train.max_steps", "2e3", 2000),
        ("decomposition.accumulate_weights", "false", False),
        ("decomposition.accumulate_weights", "YES", True),
        ("decomposition.targets", "attention", "attention"),
        ("decomposition.targets", "q_proj, k_proj", ["q_proj", "k_proj"]),
        ("decomposition.parameterization", "smatvd", "SmatVD"),
        ("model.context_length", "none", None),
        ("model.context_length", "64", 64),
        ("data.max_chars", "null", None),
        ("train.loss_divergence_margin", "inf", math.inf),
    ],
)
def test_overrides_parse_strings(key, text, expected):
    config = RunConfig().with_overrides({key: text})
    section, name = key.split(".")
    assert getattr(getattr(config, section), name) == expected


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        ({"optim.lr": "0"}, ["optim.lr", "0.0", "> 0"]),
        ({"optim.lr": "-1e-3"}, ["optim.lr", "-0.001", "> 0"]),
        ({"optim.lr": "abc"}, ["optim.lr", "'abc'", "a number"]),
        ({"optim.lr": "nan"}, ["optim.lr", "nan", "finite number"]),
        ({"decomposition.reproject_every_steps": "-1"}, ["reproject_every_steps", "-1", ">= 0"]),
        ({"train.micro_batch_size": "0"}, ["train.micro_batch_size", "0", ">= 1"]),
        ({"train.grad_accum_steps": "0"}, ["train.grad_accum_steps", "0", ">= 1"]),
        ({"train.max_steps": "1.5"}, ["train.max_steps", "1.5", "an integer"]),
        ({"model.context_length": "100000"}, ["model.context_length", "100000", "at most 512"]),
        ({"model.preset": "llama3-tinyy"}, ["model.preset", "llama3-tinyy", "llama3-small"]),
        ({"data.vocab_size": "5000"}, ["data.vocab_size", "5000", "4096"]),
        ({"decomposition.optimizer_state": "drop"}, ["optimizer_state", "drop", "keep, reset"]),
        ({"train.device": "tpu"}, ["train.device", "tpu", "auto, cpu, cuda"]),
        ({"train.precision": "fp16"}, ["train.precision", "fp16", "fp32, bf16"]),
        ({"optim.betas": "0.9"}, ["optim.betas", "0.9", "2 comma-separated"]),
        ({"optim.betas": "0.9,1.5"}, ["optim.betas", "1.5", "[0, 1)"]),
        ({"optim.min_lr_ratio": "2"}, ["optim.min_lr_ratio", "2.0", "[0, 1]"]),
        ({"train.loss_divergence_margin": "0"}, ["loss_divergence_margin", "0.0", "> 0"]),
    ],
)
def test_invalid_value_names_field(overrides, fragments):
    with pytest.raises(ConfigError) as caught:
        RunConfig().with_overrides(overrides)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message


def test_unknown_parameterization_suggests():
    with pytest.raises(ConfigError) as caught:
        RunConfig().with_overrides({"decomposition.parameterization": "SvecVDD"})
    message = str(caught.value)
    assert "decomposition.parameterization" in message
    assert "SvecVDD" in message
    assert "Did you mean 'SvecVD'?" in message


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("optim.lrr", "optim.lr"),
        ("train.warmup_steps", "optim.warmup_steps"),
        ("optimm.lr", "optim.lr"),
    ],
)
def test_unknown_key_suggests(key, suggestion):
    with pytest.raises(ConfigError) as caught:
        RunConfig().with_overrides({key: "1"})
    assert f"unknown config key '{key}'" in str(caught.value)
    assert f"Did you mean '{suggestion}'?" in str(caught.value)


def test_unknown_section_suggests():
    with pytest.raises(ConfigError, match="Did you mean 'optim'"):
        RunConfig.from_dict({"optimizer": {"lr": 1e-3}})


def test_load_toml_and_json(tmp_path):
    toml_path = tmp_path / "run.toml"
    toml_path.write_text(
        '[model]\npreset = "llama3-small"\n[optim]\nlr = 1e-3\nbetas = [0.8, 0.9]\n'
        '[decomposition]\nparameterization = "ivecIW"\ntargets = ["q_proj", "o_proj"]\n'
    )
    config = RunConfig.load(toml_path)
    assert config.model.preset == "llama3-small"
    assert config.optim.lr == 1e-3
    assert config.optim.betas == (0.8, 0.9)
    assert config.decomposition.parameterization == "IvecIW"
    assert config.decomposition.targets == ["q_proj", "o_proj"]

    # A run's config.json carries a "run" table, which load() skips.
    json_path = tmp_path / "config.json"
    json_path.write_text(json.dumps({**config.to_dict(), "run": {"world_size": 1}}))
    assert RunConfig.load(json_path) == config


def test_load_rejects_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        RunConfig.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim\nlr = 1")
    with pytest.raises(ConfigError, match="invalid config file"):
        RunConfig.load(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[train]\nmax_step = 5\n")
    with pytest.raises(ConfigError, match="Did you mean 'max_steps'"):
        RunConfig.load(unknown)
    yaml = tmp_path / "run.yaml"
    yaml.write_text("model: {}")
    with pytest.raises(ConfigError, match=".toml or .json"):
        RunConfig.load(yaml)


def test_context_length_defaults_to_preset():
    for name, preset in PRESETS.items():
        config = RunConfig().with_overrides({"model.preset": name, "data.vocab_size": 512})
        assert config.context_length == preset.context_length
    assert RunConfig().with_overrides({"model.context_length": 100}).context_length == 100


def test_context_limit_skipped_for_pretrained():
    # The pretrained model's own limit is checked when its config is read.
    config = RunConfig().with_overrides(
        {"model.init_from": "/some/checkpoint", "model.context_length": 100_000}
    )
    assert config.context_length == 100_000


def test_all_config_keys_cover_sections():
    keys = all_config_keys()
    assert "optim.lr" in keys
    assert "data.source" in keys
    assert "train.loss_divergence_margin" in keys
    assert len(keys) == len(set(keys))


def test_convert_value_table():
    assert convert_value("k", "3", int | None) == 3
    assert convert_value("k", "", int | None) is None
    assert convert_value("k", 2, float) == 2.0
    with pytest.raises(ConfigError, match="expected an integer"):
        convert_value("k", True, int)
    with pytest.raises(ConfigError, match="expected true or false"):
        convert_value("k", "maybe", bool)

"""AdamW parameter groups and the warmup-then-cosine learning-rate schedule."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaForCausalLM

import overparam
from overparam.llm.config import OptimConfig
from overparam.llm.optim import build_optimizer, build_scheduler, lr_multiplier, parameter_groups
from overparam.llm.presets import get_preset


def _model(parameterization: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = LlamaForCausalLM(get_preset("llama3-tiny").llama_config(vocab_size=64))
    overparam.decompose(model, parameterization, "attention")
    return model


@pytest.mark.parametrize("parameterization", ["dense", "SvecVD", "ImatIW"])
def test_weight_decay_groups(parameterization):
    model = _model(parameterization)
    decay, no_decay = parameter_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01
    assert no_decay["weight_decay"] == 0.0

    names = {id(p): name for name, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    not_decayed = {names[id(p)] for p in no_decay["params"]}
    for name in decayed:
        is_factor = name.rsplit(".", 1)[-1] in ("U", "S", "V")
        assert is_factor or name.endswith("weight")
        assert "norm" not in name
    for name in not_decayed:
        assert "norm" in name
    assert "model.embed_tokens.weight" in decayed
    if parameterization == "SvecVD":
        assert "model.layers.0.self_attn.q_proj.S" in decayed  # a vector S is decayed too
    assert len(decayed) + len(not_decayed) == len(names)


def test_schedule_closed_form():
    warmup, total, ratio = 10, 110, 0.1
    assert lr_multiplier(0, warmup, total, ratio) == pytest.approx(0.1)
    assert lr_multiplier(4, warmup, total, ratio) == pytest.approx(0.5)
    assert lr_multiplier(9, warmup, total, ratio) == pytest.approx(1.0)
    assert lr_multiplier(10, warmup, total, ratio) == pytest.approx(1.0)
    # Halfway through the decay, cos(pi/2) = 0 puts the rate midway between 1 and the floor.
    middle = 10 + (total - warmup - 1) / 2
    halfway = lr_multiplier(int(middle), warmup, total, ratio)
    expected = ratio + (1 - ratio) * 0.5 * (1 + math.cos(math.pi * int(middle - 10) / 99))
    assert halfway == pytest.approx(expected)
    assert lr_multiplier(total - 1, warmup, total, ratio) == pytest.approx(ratio)
    assert lr_multiplier(total + 50, warmup, total, ratio) == pytest.approx(ratio)


def test_schedule_monotone():
    values = [lr_multiplier(step, 5, 50, 0.2) for step in range(50)]
    assert all(a < b for a, b in zip(values[:5], values[1:5], strict=False))
    assert all(a >= b for a, b in zip(values[4:], values[5:], strict=False))


def test_scheduler_drives_optimizer():
    model = _model("dense")
    config = OptimConfig(lr=2e-3, warmup_steps=3, min_lr_ratio=0.25)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, max_steps=20)
    for step in range(20):
        expected = 2e-3 * lr_multiplier(step, 3, 20, 0.25)
        assert scheduler.get_last_lr()[0] == pytest.approx(expected, rel=1e-12)
        for group in optimizer.param_groups:
            assert group["lr"] == pytest.approx(expected, rel=1e-12)
        optimizer.step()
        scheduler.step()


def test_optimizer_settings():
    config = OptimConfig(lr=1e-3, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.05)
    optimizer = build_optimizer(_model("SmatVD"), config)
    group = optimizer.param_groups[0]
    assert group["betas"] == (0.8, 0.9)
    assert group["eps"] == 1e-6
    assert group["weight_decay"] == 0.05
    assert optimizer.param_groups[1]["weight_decay"] == 0.0

"""Llama-3 presets: parameter counts, the published 1B shape and the CPU scalings."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

import overparam
from overparam.errors import ConfigError
from overparam.llm.presets import PRESETS, get_preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_parameter_count(name):
    preset = PRESETS[name]
    with torch.device("meta"):
        model = LlamaForCausalLM(preset.llama_config())
    assert preset.num_parameters() == sum(p.numel() for p in model.parameters())

    with torch.device("meta"):
        small_vocab = LlamaForCausalLM(preset.llama_config(vocab_size=300))
    assert preset.num_parameters(300) == sum(p.numel() for p in small_vocab.parameters())

    attention = sum(
        module.weight.numel()
        for module_name, module in model.named_modules()
        if module_name.rsplit(".", 1)[-1] in ("q_proj", "k_proj", "v_proj", "o_proj")
    )
    assert preset.num_attention_parameters() == attention


@pytest.mark.parametrize("parameterization", ["SvecVD", "SmatVD", "IvecIW", "ImatIW"])
def test_decomposed_parameter_count(parameterization):
    preset = PRESETS["llama3-tiny"]
    model = LlamaForCausalLM(preset.llama_config(vocab_size=256))
    overparam.decompose(model, parameterization, "attention")
    expected = sum(p.numel() for p in model.parameters())
    assert preset.num_parameters(256, parameterization) == expected


def test_llama32_1b_matches_published():
    preset = get_preset("llama3.2-1b")
    config = preset.llama_config()
    # The released Llama-3.2-1B has 1,235,814,400 parameters (tied embeddings counted once).
    assert preset.num_parameters() == 1_235_814_400
    assert config.num_hidden_layers == 16
    assert config.num_key_value_heads == 8
    assert config.head_dim == 64
    assert config.tie_word_embeddings
    rope = config.rope_parameters
    assert rope["rope_type"] == "llama3"
    assert rope["rope_theta"] == 500_000.0
    assert rope["factor"] == 32.0
    assert rope["low_freq_factor"] == 1.0
    assert rope["high_freq_factor"] == 4.0
    assert rope["original_max_position_embeddings"] == 8192
    assert config.max_position_embeddings == 131_072
    assert preset.context_length == 1024


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_keeps_architecture(name):
    preset = PRESETS[name]
    config = preset.llama_config()
    assert config.num_attention_heads % config.num_key_value_heads == 0
    assert config.num_key_value_heads < config.num_attention_heads  # grouped-query attention
    assert config.hidden_act == "silu"  # SwiGLU
    assert config.tie_word_embeddings
    assert preset.context_length <= config.max_position_embeddings


def test_small_preset_size():
    assert 8e6 <= get_preset("llama3-small").num_parameters() <= 12e6


def test_unknown_preset_suggests():
    with pytest.raises(ConfigError, match="Did you mean 'llama3-small'"):
        get_preset("llama3-smal")

"""decompose / merge / reproject / diagnostics on a tiny Hugging Face Llama built from a config."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

import overparam
from overparam import ConfigError, DecomposedLinear, TargetNotFoundError
from overparam.parameterizations import DECOMPOSED, PARAMETERIZATIONS

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # GQA: k_proj and v_proj are wide (16 x 32)
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def reference():
    model = tiny_llama()
    input_ids = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(input_ids).logits
    return model, input_ids, logits


def copy_of(model: LlamaForCausalLM) -> LlamaForCausalLM:
    clone = LlamaForCausalLM(model.config).eval()
    clone.load_state_dict(model.state_dict())
    return clone


def relative_error(actual, expected) -> float:
    return float((actual - expected).norm() / expected.norm())


@pytest.mark.parametrize("name", PARAMETERIZATIONS)
def test_decompose_keeps_llama_logits(reference, name):
    original, input_ids, expected = reference
    model = copy_of(original)

    names = overparam.decompose(model, name)

    assert len(names) == 2 * len(ATTENTION)
    assert {n.rsplit(".", 1)[-1] for n in names} == set(ATTENTION)
    expected_type = nn.Linear if name == "dense" else DecomposedLinear
    assert all(type(model.get_submodule(n)) is expected_type for n in names)
    with torch.no_grad():
        assert relative_error(model(input_ids).logits, expected) <= 1e-5


@pytest.mark.parametrize("name", DECOMPOSED)
def test_merge_save_pretrained_reload(reference, name, tmp_path):
    original, input_ids, expected = reference
    model = copy_of(original)
    overparam.decompose(model, name, targets="all-linear")
    with torch.no_grad():  # train-like drift, so the merge has something to fold
        for layer in overparam.decomposed_layers(model).values():
            layer.S.mul_(1.01)
        drifted = model(input_ids).logits

    assert overparam.merge(model) == 2 * 7
    assert set(model.state_dict()) == set(original.state_dict())
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied
    model.save_pretrained(tmp_path)

    reloaded = LlamaForCausalLM.from_pretrained(tmp_path).eval()
    assert set(reloaded.state_dict()) == set(original.state_dict())
    with torch.no_grad():
        logits = reloaded(input_ids).logits
    assert torch.equal(logits, model(input_ids).logits)
    assert relative_error(logits, drifted) <= 1e-5


def test_all_linear_leaves_tied_head_out(reference):
    model = copy_of(reference[0])
    names = overparam.decompose(model, "SvecVD", targets="all-linear")
    assert "lm_head" not in names
    assert len(names) == 2 * 7  # 4 attention + 3 MLP projections per layer


def test_targets_mlp_and_patterns(reference):
    model = copy_of(reference[0])
    assert overparam.resolve_targets(model, "mlp") == [
        f"model.layers.{i}.mlp.{p}" for i in range(2) for p in ("gate_proj", "up_proj", "down_proj")
    ]
    assert overparam.resolve_targets(model, ["model.layers.1.self_attn.q_proj", "o_proj"]) == [
        "model.layers.0.self_attn.o_proj",
        "model.layers.1.self_attn.q_proj",
        "model.layers.1.self_attn.o_proj",
    ]


def test_unknown_target_lists_layers(reference):
    model = copy_of(reference[0])
    with pytest.raises(TargetNotFoundError, match="qkv_proj") as info:
        overparam.decompose(model, "SvecVD", targets=["q_proj", "qkv_proj"])
    assert "model.layers.0.self_attn.q_proj" in str(info.value)
    assert not overparam.decomposed_layers(model)  # checked before any layer changed


def test_tied_head_rejected(reference):
    model = copy_of(reference[0])
    with pytest.raises(ConfigError, match="tied"):
        overparam.decompose(model, "SvecVD", targets=["lm_head"])


def test_unknown_parameterization_suggests():
    with pytest.raises(ConfigError, match="Did you mean 'SvecVD'"):
        overparam.resolve_parameterization("SvecDV")
    assert overparam.resolve_parameterization("imatiw") == "ImatIW"


@pytest.mark.parametrize("name", DECOMPOSED)
def test_reproject_model_keeps_logits(reference, name):
    original, input_ids, _ = reference
    model = copy_of(original)
    overparam.decompose(model, name)
    with torch.no_grad():
        for layer in overparam.decomposed_layers(model).values():
            layer.U.add_(0.01 * torch.randn_like(layer.U))
        before = model(input_ids).logits
        assert overparam.reproject(model) == 8
        after = model(input_ids).logits
    assert relative_error(after, before) <= 1e-5


@pytest.mark.parametrize("name", DECOMPOSED)
def test_decomposed_model_safetensors_round_trip(reference, name, tmp_path):
    original, input_ids, _ = reference
    model = copy_of(original)
    overparam.decompose(model, name)
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied
    save_file(state, tmp_path / "model.safetensors")

    clone = copy_of(original)
    overparam.decompose(clone, name)
    with torch.no_grad():
        for parameter in clone.parameters():
            parameter.zero_()
    missing, unexpected = clone.load_state_dict(
        load_file(tmp_path / "model.safetensors"), strict=False
    )
    assert unexpected == []
    assert missing == ["lm_head.weight"]
    with torch.no_grad():
        assert torch.equal(clone(input_ids).logits, model(input_ids).logits)


def test_diagnostics_closed_forms():
    model = nn.Sequential()
    model.add_module("q_proj", nn.Linear(4, 3, bias=False))  # out <= in: U starts as I
    model.add_module("k_proj", nn.Linear(3, 4, bias=False))  # out > in: V starts as I
    overparam.decompose(model, "ImatIW", targets=["q_proj", "k_proj"])
    with torch.no_grad():
        model.q_proj.U.copy_(2 * torch.eye(3))  # UᵀU − I = 3I: error 3√3/√3 = 3
        model.q_proj.S.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 1.0]]))
        model.q_proj.V.copy_(torch.eye(4, 3))  # orthonormal columns
        model.k_proj.V.copy_(torch.eye(3))
        model.k_proj.S.copy_(torch.eye(3))
        model.k_proj.U.copy_(
            torch.cat([torch.diag(torch.tensor([4.0, 2.0, 1.0])), torch.zeros(1, 3)])
        )

    figures = overparam.diagnostics(model)
    q, k = figures["q_proj"], figures["k_proj"]

    assert q["orth_error_U"] == pytest.approx(3.0)
    assert q["orth_error_V"] == pytest.approx(0.0, abs=1e-7)
    assert q["offdiag_share_S"] == pytest.approx(1 / math.sqrt(4))
    # ‖U − I‖ = √3, ‖S − I‖ = 1, over √3
    assert q["identity_distance"] == pytest.approx(math.sqrt(3 + 1) / math.sqrt(3))
    assert k["identity_distance"] == pytest.approx(0.0)
    assert k["spectral_norm"] == pytest.approx(4.0)
    assert k["condition_number"] == pytest.approx(4.0)

    summary = overparam.summarize_diagnostics(figures)
    assert summary["drift/orth_error_U"] == pytest.approx(
        (q["orth_error_U"] + k["orth_error_U"]) / 2
    )
    assert summary["drift/identity_distance"] == pytest.approx(q["identity_distance"] / 2)

"""Fine-tuning path: a pretrained checkpoint loads through the harness and keeps its logits."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from overparam.llm.config import RunConfig
from overparam.llm.model import build_model, model_config

TOKENS = torch.randint(0, 96, (2, 24), generator=torch.Generator().manual_seed(0))  # (B, T)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny Llama with random weights saved as a Hugging Face checkpoint."""
    torch.manual_seed(123)
    config = LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    model = LlamaForCausalLM(config).float().eval()
    path = tmp_path_factory.mktemp("pretrained")
    model.save_pretrained(path)
    with torch.no_grad():
        logits = model(input_ids=TOKENS).logits.double()  # (B, T, V)
    return path, logits


@pytest.mark.parametrize("parameterization", ["dense", "SvecVD", "IvecIW"])
def test_finetune_logits_preserved(pretrained, parameterization):
    path, reference = pretrained
    config = RunConfig.from_dict(
        {
            "model": {"init_from": str(path), "context_length": 32},
            "decomposition": {"parameterization": parameterization, "targets": "attention"},
            "train": {"device": "cpu"},
        }
    )
    built = build_model(config, model_config(config, vocab_size=None), torch.device("cpu"))
    assert len(built.decomposed_layers) == 2 * 4  # q, k, v, o of both layers
    q_proj = built.model.get_submodule(built.decomposed_layers[0])
    assert isinstance(q_proj, torch.nn.Linear) == (parameterization == "dense")

    built.model.eval()
    with torch.no_grad():
        logits = built.model(input_ids=TOKENS).logits.double()  # (B, T, V)
    relative = torch.linalg.norm(logits - reference) / torch.linalg.norm(reference)
    # Exact for dense (the same weights); float32 thin-SVD round-off for the factored forms.
    assert relative <= (1e-7 if parameterization == "dense" else 1e-5)

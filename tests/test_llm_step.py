"""Gradients of one optimizer step: independent of the accumulation split, loss per token."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

import overparam
from overparam.llm.distributed import DistributedContext
from overparam.llm.step import IGNORE_INDEX, compute_gradients, evaluate, gradient_norm

VOCAB, BATCH, LENGTH = 48, 8, 12


def _model(parameterization: str) -> torch.nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).float()
    overparam.decompose(model, parameterization, "attention")
    return model


def _global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """A batch whose sequences hold very different numbers of label tokens."""
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, VOCAB, (BATCH, LENGTH), generator=generator)  # (B, T)
    labels = torch.randint(0, VOCAB, (BATCH, LENGTH), generator=generator)  # (B, T)
    for row in range(BATCH):
        labels[row, : row + (3 if row % 2 else 0)] = IGNORE_INDEX  # 0 to 10 ignored per row
    labels[5] = IGNORE_INDEX  # one sequence with no label token at all
    return input_ids, labels


def _reference_grads(parameterization: str) -> dict[str, torch.Tensor]:
    """Gradients of the mean token loss of the whole batch in one float64 forward pass."""
    model = _model(parameterization).double()
    input_ids, labels = _global_batch()
    logits = model(input_ids=input_ids).logits  # (B, T, V)
    loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
    loss.backward()
    return {name: p.grad.float() for name, p in model.named_parameters()}, loss.item()


def _split_grads(parameterization: str, micro_batch_size: int, accumulate: bool):
    model = _model(parameterization)
    input_ids, labels = _global_batch()
    micro_batches = [
        (input_ids[start : start + micro_batch_size], labels[start : start + micro_batch_size])
        for start in range(0, BATCH, micro_batch_size)
    ]
    accumulator = overparam.WeightAccumulator(model) if accumulate else None
    result = compute_gradients(
        model, micro_batches, accumulator=accumulator, context=DistributedContext()
    )
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return grads, float(result.loss), model


@pytest.mark.parametrize("parameterization", ["dense", "SvecVD", "SmatVD", "IvecIW"])
@pytest.mark.parametrize("accumulate", [True, False])
def test_split_gives_same_gradients(parameterization, accumulate):
    reference, reference_loss = _reference_grads(parameterization)
    for micro_batch_size in (8, 2, 1):  # splits 1x8, 4x2 and 8x1 of the global batch
        grads, loss, _ = _split_grads(parameterization, micro_batch_size, accumulate)
        assert loss == pytest.approx(reference_loss, rel=1e-5)
        for name, expected in reference.items():
            scale = expected.abs().max().clamp_min(1e-6)
            error = float((grads[name] - expected).abs().max() / scale)
            assert error < 1e-4, f"{name} with micro-batches of {micro_batch_size}: {error}"


def test_accumulator_finishes():
    _, _, model = _split_grads("SvecVD", 2, accumulate=True)
    # After finish() the layers run on their factors again, not on a cached weight.
    for layer in overparam.decomposed_layers(model).values():
        assert layer._accumulated_weight is None
        assert layer.U.grad is not None


def test_nonfinite_loss_flagged():
    model = _model("dense")
    with torch.no_grad():
        # o_proj, because CPU SDPA turns a NaN query into a zero output and q_proj would not
        # reach the loss (its NaN shows up in the gradient norm instead).
        model.model.layers[0].self_attn.o_proj.weight[0, 0] = float("nan")
    input_ids, labels = _global_batch()
    result = compute_gradients(
        model, [(input_ids, labels)], accumulator=None, context=DistributedContext()
    )
    assert float(result.nonfinite_flag) == 1.0
    assert float(result.stop_flag) == 0.0


def test_stop_flag_passed_through():
    model = _model("dense")
    input_ids, labels = _global_batch()
    result = compute_gradients(
        model,
        [(input_ids, labels)],
        accumulator=None,
        context=DistributedContext(),
        stop_requested=True,
    )
    assert float(result.stop_flag) == 1.0


def test_gradient_norm_clips():
    model = _model("SvecVD")
    input_ids, labels = _global_batch()
    compute_gradients(model, [(input_ids, labels)], accumulator=None, context=DistributedContext())
    parameters = list(model.parameters())
    expected = torch.linalg.vector_norm(torch.cat([p.grad.double().flatten() for p in parameters]))
    unclipped = gradient_norm(parameters, 0.0)
    assert float(unclipped) == pytest.approx(float(expected), rel=1e-5)

    limit = float(expected) / 4
    norm = gradient_norm(parameters, limit)
    assert float(norm) == pytest.approx(float(expected), rel=1e-5)  # reported before clipping
    clipped = torch.linalg.vector_norm(torch.cat([p.grad.double().flatten() for p in parameters]))
    assert float(clipped) == pytest.approx(limit, rel=1e-4)


def test_evaluate_mean_token_loss():
    model = _model("ImatIW")
    input_ids, labels = _global_batch()
    batches = [(input_ids[:3], labels[:3]), (input_ids[3:], labels[3:])]
    with torch.no_grad():
        logits = model.double()(input_ids=input_ids).logits  # (B, T, V)
        expected = F.cross_entropy(
            logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX
        )
    model.float()
    assert evaluate(model, batches, context=DistributedContext()) == pytest.approx(
        float(expected), rel=1e-5
    )
    assert model.training  # evaluate restores train mode

"""Accumulated-weight mode gives the naive path's gradients, also under 2-process gloo."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from transformers import LlamaConfig, LlamaForCausalLM

import overparam
from overparam.parameterizations import PARAMETERIZATIONS

VOCAB = 64
MICRO_BATCHES = 4


def build_model(name: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    model = LlamaForCausalLM(config)
    overparam.decompose(model, name)
    return model


def micro_batches() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return [torch.randint(0, VOCAB, (2, 10), generator=generator) for _ in range(MICRO_BATCHES)]


def naive_grads(model, batches) -> dict[str, torch.Tensor]:
    model.zero_grad()
    for input_ids in batches:
        (model(input_ids, labels=input_ids).loss / len(batches)).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def assert_grads_close(model, expected) -> None:
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        scale = expected[name].abs().max().clamp_min(1e-12)
        error = (parameter.grad - expected[name]).abs().max() / scale
        assert error <= 1e-5, f"{name}: relative error {float(error):.2e}"


@pytest.mark.parametrize("name", PARAMETERIZATIONS)
def test_accumulated_equals_naive(name):
    model = build_model(name)
    batches = micro_batches()
    expected = naive_grads(model, batches)

    model.zero_grad()
    accumulator = overparam.WeightAccumulator(model)
    assert len(accumulator.layers) == (0 if name == "dense" else 8)
    with accumulator:
        for input_ids in batches:
            (model(input_ids, labels=input_ids).loss / len(batches)).backward()

    assert not accumulator.active
    assert all(layer._accumulated_weight is None for layer in accumulator.layers)
    assert_grads_close(model, expected)


def test_accumulated_forward_uses_cached_weight():
    model = build_model("SvecVD")
    accumulator = overparam.WeightAccumulator(model)
    input_ids = micro_batches()[0]
    accumulator.begin()
    with torch.no_grad():  # a factor change inside the step must not reach the forward
        reference = model(input_ids).logits
        accumulator.layers[0].U.mul_(2.0)
        assert torch.equal(model(input_ids).logits, reference)
    accumulator.discard()
    with torch.no_grad():
        assert not torch.equal(model(input_ids).logits, reference)
    assert all(p.grad is None for p in model.parameters())


def test_begin_twice_raises():
    accumulator = overparam.WeightAccumulator(build_model("IvecIW"))
    accumulator.begin()
    with pytest.raises(RuntimeError, match="twice"):
        accumulator.begin()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _data_parallel_worker(rank: int, world_size: int, port: int, results) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        torch.set_num_threads(1)
        for name in PARAMETERIZATIONS:
            results[(rank, name)] = _data_parallel_errors(rank, world_size, name)
    finally:
        dist.destroy_process_group()


def _data_parallel_errors(rank: int, world_size: int, name: str) -> dict[str, float]:
    model = build_model(name)
    batches = micro_batches()
    expected = naive_grads(model, batches)  # one process, the whole global batch

    # This rank's share of the micro-batches, each loss scaled by the global count.
    model.zero_grad()
    accumulator = overparam.WeightAccumulator(model)
    accumulator.begin()
    for input_ids in batches[rank::world_size]:
        (model(input_ids, labels=input_ids).loss / len(batches)).backward()
    ordinary = [
        p.grad
        for p in model.parameters()
        if p.grad is not None
        and all(p is not f for layer in accumulator.layers for f in layer.factors)
    ]
    for grad in ordinary + accumulator.weight_grads():
        dist.all_reduce(grad)  # sum over ranks: each rank already divided by the global count
    accumulator.finish()

    errors = {}
    for param_name, parameter in model.named_parameters():
        scale = expected[param_name].abs().max().clamp_min(1e-12)
        errors[param_name] = float((parameter.grad - expected[param_name]).abs().max() / scale)
    return errors


@pytest.mark.slow
def test_accumulated_data_parallel_gloo():
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_data_parallel_worker, args=(2, _free_port(), results), nprocs=2, join=True)
    assert sorted(results.keys()) == sorted((r, n) for r in range(2) for n in PARAMETERIZATIONS)
    for (rank, name), errors in results.items():
        worst = max(errors, key=errors.get)
        assert errors[worst] <= 1e-5, f"{name}, rank {rank}, {worst}: error {errors[worst]:.2e}"

"""TokenBatches: packing, per-epoch permutations and split-invariant micro-batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from overparam.errors import ConfigError, DataError
from overparam.llm.data import TokenBatches

CONTEXT_LENGTH = 8
SEQUENCE_TOKENS = CONTEXT_LENGTH + 1
NUM_SEQUENCES = 40


def position_tokens(num_tokens: int = NUM_SEQUENCES * SEQUENCE_TOKENS + 5) -> np.ndarray:
    """Tokens equal to their own position, so a batch shows where it was read from."""
    return np.arange(num_tokens, dtype=np.uint32)


def test_num_sequences_drops_tail():
    batches = TokenBatches(position_tokens(), CONTEXT_LENGTH, seed=0)

    assert batches.num_sequences == NUM_SEQUENCES


def test_get_reads_packed_sequences():
    batches = TokenBatches(position_tokens(), CONTEXT_LENGTH, seed=0)
    indices = [3, 0, 39]

    input_ids, labels = batches.get(indices)

    assert input_ids.dtype == torch.int64
    assert input_ids.shape == (3, CONTEXT_LENGTH)
    starts = torch.tensor(indices)[:, None] * SEQUENCE_TOKENS
    expected = starts + torch.arange(CONTEXT_LENGTH)
    assert torch.equal(input_ids, expected)
    assert torch.equal(labels, expected + 1)


def test_get_rejects_out_of_range():
    batches = TokenBatches(position_tokens(), CONTEXT_LENGTH, seed=0)

    with pytest.raises(IndexError, match="40"):
        batches.get([NUM_SEQUENCES])


def test_epoch_visits_every_sequence_once():
    batches = TokenBatches(position_tokens(), CONTEXT_LENGTH, seed=3)

    epoch_0 = np.concatenate([batches.sample_indices(step, 8) for step in range(5)])
    epoch_1 = np.concatenate([batches.sample_indices(step, 8) for step in range(5, 10)])

    assert sorted(epoch_0.tolist()) == list(range(NUM_SEQUENCES))
    assert sorted(epoch_1.tolist()) == list(range(NUM_SEQUENCES))
    assert epoch_0.tolist() != epoch_1.tolist()
    assert epoch_0.tolist() != sorted(epoch_0.tolist())


def test_batch_across_epoch_end():
    batches = TokenBatches(position_tokens(), CONTEXT_LENGTH, seed=3)
    # 40 sequences, batches of 12: step 3 takes positions 36..47, i.e. the last 4 of epoch 0
    # and the first 8 of epoch 1.
    epoch_0 = np.concatenate([batches.sample_indices(step, 8) for step in range(5)])
    epoch_1 = np.concatenate([batches.sample_indices(step, 8) for step in range(5, 10)])

    step_3 = batches.sample_indices(3, 12)

    assert step_3.tolist() == epoch_0[36:].tolist() + epoch_1[:8].tolist()


def test_batch_larger_than_epoch():
    batches = TokenBatches(position_tokens(), CONTEXT_LENGTH, seed=1)

    indices = batches.sample_indices(0, 2 * NUM_SEQUENCES + 3)

    assert sorted(indices[:NUM_SEQUENCES].tolist()) == list(range(NUM_SEQUENCES))
    assert sorted(indices[NUM_SEQUENCES : 2 * NUM_SEQUENCES].tolist()) == list(range(NUM_SEQUENCES))


def test_indices_stateless():
    warm = TokenBatches(position_tokens(), CONTEXT_LENGTH, seed=5)
    for step in range(30):
        warm.sample_indices(step, 7)

    fresh = TokenBatches(position_tokens(), CONTEXT_LENGTH, seed=5)

    assert fresh.sample_indices(29, 7).tolist() == warm.sample_indices(29, 7).tolist()
    assert fresh.sample_indices(2, 7).tolist() == warm.sample_indices(2, 7).tolist()


def test_seed_changes_order():
    tokens = position_tokens()
    first = TokenBatches(tokens, CONTEXT_LENGTH, seed=0).sample_indices(0, NUM_SEQUENCES)
    same = TokenBatches(tokens, CONTEXT_LENGTH, seed=0).sample_indices(0, NUM_SEQUENCES)
    other = TokenBatches(tokens, CONTEXT_LENGTH, seed=1).sample_indices(0, NUM_SEQUENCES)

    assert first.tolist() == same.tolist()
    assert first.tolist() != other.tolist()
    assert sorted(other.tolist()) == sorted(first.tolist())


def collect_micro_batches(
    batches: TokenBatches, step: int, micro_batch_size: int, grad_accum_steps: int, world_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate every micro-batch of a step, rank by rank, in micro-batch order."""
    inputs, labels = [], []
    for rank in range(world_size):
        for micro_index in range(grad_accum_steps):
            x, y = batches.micro_batch(
                step, micro_index, micro_batch_size, grad_accum_steps, rank, world_size
            )
            assert x.shape == (micro_batch_size, CONTEXT_LENGTH)
            inputs.append(x)
            labels.append(y)
    return torch.cat(inputs), torch.cat(labels)


# (micro_batch_size, grad_accum_steps, world_size), each a global batch of 8 sequences.
SPLITS = [(8, 1, 1), (4, 2, 1), (1, 8, 1), (2, 4, 1), (1, 4, 2), (2, 2, 2), (4, 1, 2)]


@pytest.mark.parametrize("split", SPLITS, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("step", [0, 4, 13])
def test_micro_batches_cover_global_batch(split, step):
    batches = TokenBatches(position_tokens(), CONTEXT_LENGTH, seed=11)
    expected_inputs, expected_labels = batches.get(batches.sample_indices(step, 8))

    inputs, labels = collect_micro_batches(batches, step, *split)

    assert torch.equal(inputs, expected_inputs)
    assert torch.equal(labels, expected_labels)


def test_micro_batch_labels_shifted():
    batches = TokenBatches(position_tokens(), CONTEXT_LENGTH, seed=2)

    inputs, labels = batches.micro_batch(7, 1, 3, 2, rank=1, world_size=2)

    assert torch.equal(labels[:, :-1], inputs[:, 1:])
    # Position tokens: each label is the next position of the packed stream.
    assert torch.equal(labels, inputs + 1)
    assert torch.equal(inputs[:, 0] % SEQUENCE_TOKENS, torch.zeros(3, dtype=torch.int64))


def test_ranks_get_disjoint_sequences():
    batches = TokenBatches(position_tokens(), CONTEXT_LENGTH, seed=4)

    rank_0, _ = batches.micro_batch(2, 0, 4, 1, rank=0, world_size=2)
    rank_1, _ = batches.micro_batch(2, 0, 4, 1, rank=1, world_size=2)

    assert not set(rank_0[:, 0].tolist()) & set(rank_1[:, 0].tolist())


@pytest.mark.parametrize(
    "arguments",
    [
        {"micro_index": 2, "grad_accum_steps": 2},
        {"micro_index": -1, "grad_accum_steps": 2},
        {"rank": 2, "world_size": 2},
        {"micro_batch_size": 0},
    ],
)
def test_micro_batch_rejects_invalid(arguments):
    batches = TokenBatches(position_tokens(), CONTEXT_LENGTH, seed=0)
    values = {"micro_index": 0, "micro_batch_size": 2, "grad_accum_steps": 1}
    values.update(arguments)

    with pytest.raises(ConfigError, match=next(iter(arguments))):
        batches.micro_batch(step=0, **values)


def test_eval_batches_spread_evenly():
    batches = TokenBatches(position_tokens(), CONTEXT_LENGTH, seed=0)

    # 100 tokens need ceil(100 / 8) = 13 sequences, read in batches of 5, 5 and 3.
    pieces = list(batches.eval_batches(num_tokens=100, batch_size=5))

    assert [x.shape[0] for x, _ in pieces] == [5, 5, 3]
    starts = torch.cat([x[:, 0] for x, _ in pieces]) // SEQUENCE_TOKENS
    assert starts.tolist() == [i * NUM_SEQUENCES // 13 for i in range(13)]
    assert all(torch.equal(y, x + 1) for x, y in pieces)


def test_eval_batches_capped_and_repeatable():
    batches = TokenBatches(position_tokens(), CONTEXT_LENGTH, seed=0)

    first = list(batches.eval_batches(num_tokens=10**9, batch_size=16))
    second = list(TokenBatches(position_tokens(), CONTEXT_LENGTH, seed=9).eval_batches(10**9, 16))

    starts = torch.cat([x[:, 0] for x, _ in first]) // SEQUENCE_TOKENS
    assert starts.tolist() == list(range(NUM_SEQUENCES))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, second, strict=True))


def test_too_few_tokens():
    with pytest.raises(DataError, match="fewer than one sequence"):
        TokenBatches(np.arange(CONTEXT_LENGTH, dtype=np.uint16), CONTEXT_LENGTH, seed=0)


def test_memmap_tokens(tmp_path):
    path = tmp_path / "tokens.bin"
    position_tokens().astype(np.uint16).tofile(path)
    tokens = np.memmap(path, dtype=np.uint16, mode="r")

    input_ids, labels = TokenBatches(tokens, CONTEXT_LENGTH, seed=0).get([2])

    expected = 2 * SEQUENCE_TOKENS + torch.arange(CONTEXT_LENGTH)
    assert torch.equal(input_ids[0], expected)
    assert torch.equal(labels[0], expected + 1)

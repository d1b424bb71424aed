"""Stateless batch indexing over a token array packed into fixed-length sequences.

The token array is cut into non-overlapping sequences of `context_length + 1` tokens (the tail
that does not fill a sequence is unused). A sequence gives the model input (its first
`context_length` tokens) and the labels (its last `context_length` tokens). The batch of any
optimizer step is a pure function of (seed, step, global batch size), so resuming at a step or
changing the number of ranks or micro-batches needs no iterator state.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from overparam.errors import ConfigError, DataError

# Per-epoch permutations kept in memory; two cover a global batch that crosses an epoch end.
_CACHED_EPOCHS = 2


class TokenBatches:
    """Deterministic, stateless batch indexing over packed sequences.

    Step `s` with global batch size `B` takes the positions `s*B ... s*B + B - 1` of an endless
    sequence stream. Position `p` is in epoch `p // num_sequences`, and each epoch visits every
    sequence once, in a permutation seeded by (seed, epoch).
    """

    def __init__(self, tokens: np.ndarray, context_length: int, seed: int) -> None:
        if tokens.ndim != 1:
            raise ConfigError(f"tokens must be a 1-D array, got shape {tokens.shape}")
        if context_length < 1:
            raise ConfigError(f"context_length={context_length} is invalid: expected >= 1")
        if seed < 0:
            raise ConfigError(f"seed={seed} is invalid: expected an integer >= 0")
        self.tokens = tokens
        self.context_length = context_length
        self.seed = seed
        self.sequence_tokens = context_length + 1
        self.num_sequences = len(tokens) // self.sequence_tokens
        if self.num_sequences == 0:
            raise DataError(
                f"{len(tokens)} tokens are fewer than one sequence of context_length + 1 "
                f"= {self.sequence_tokens} tokens"
            )
        self._permutations: dict[int, np.ndarray] = {}

    def epoch_permutation(self, epoch: int) -> np.ndarray:
        """Return the order in which epoch `epoch` visits the sequences."""
        permutation = self._permutations.get(epoch)
        if permutation is None:
            generator = np.random.default_rng([self.seed, epoch])
            permutation = generator.permutation(self.num_sequences)
            if len(self._permutations) >= _CACHED_EPOCHS:
                self._permutations.pop(min(self._permutations))
            self._permutations[epoch] = permutation
        return permutation

    def sample_indices(self, step: int, global_batch_size: int) -> np.ndarray:
        """Return the sequence indices of optimizer step `step`'s global batch, shape (B,)."""
        if step < 0:
            raise ConfigError(f"step={step} is invalid: expected >= 0")
        if global_batch_size < 1:
            raise ConfigError(f"global_batch_size={global_batch_size} is invalid: expected >= 1")

        positions = step * global_batch_size + np.arange(global_batch_size, dtype=np.int64)
        epochs = positions // self.num_sequences
        offsets = positions % self.num_sequences
        indices = np.empty(global_batch_size, dtype=np.int64)
        for epoch in np.unique(epochs):
            in_epoch = epochs == epoch
            indices[in_epoch] = self.epoch_permutation(int(epoch))[offsets[in_epoch]]
        return indices

    def get(self, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (input_ids, labels) of the given sequences, both int64 of shape (B, T)."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_sequences):
            raise IndexError(
                f"sequence indices must be in [0, {self.num_sequences}), got {indices.tolist()}"
            )
        starts = indices * self.sequence_tokens  # (B,)
        token_positions = starts[:, None] + np.arange(self.sequence_tokens)  # (B, T + 1)
        sequences = torch.from_numpy(self.tokens[token_positions].astype(np.int64))  # (B, T + 1)
        input_ids = sequences[:, :-1].contiguous()  # (B, T)
        labels = sequences[:, 1:].contiguous()  # (B, T)
        return input_ids, labels

    def micro_batch(
        self,
        step: int,
        micro_index: int,
        micro_batch_size: int,
        grad_accum_steps: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return micro-batch `micro_index` of rank `rank` in step `step`.

        The global batch of `micro_batch_size * grad_accum_steps * world_size` sequences is
        split into one contiguous block per rank, and each rank's block into `grad_accum_steps`
        contiguous micro-batches. Concatenating the micro-batches rank by rank, in micro-batch
        order, gives the global batch, so every split of one global batch size trains on the
        same sequences in a step.
        """
        if micro_batch_size < 1 or grad_accum_steps < 1 or world_size < 1:
            raise ConfigError(
                f"micro_batch_size={micro_batch_size}, grad_accum_steps={grad_accum_steps} and "
                f"world_size={world_size} must all be >= 1"
            )
        if not 0 <= micro_index < grad_accum_steps:
            raise ConfigError(f"micro_index={micro_index} must be in [0, {grad_accum_steps})")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank={rank} must be in [0, {world_size})")

        rank_batch_size = micro_batch_size * grad_accum_steps
        global_indices = self.sample_indices(step, rank_batch_size * world_size)
        start = rank * rank_batch_size + micro_index * micro_batch_size
        return self.get(global_indices[start : start + micro_batch_size])

    def eval_batches(
        self, num_tokens: int, batch_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield fixed (input_ids, labels) batches of about `num_tokens` input tokens in all.

        The ceil(num_tokens / context_length) sequences (at most all of them) are spread
        evenly over the array, so a val split stored in corpus order is sampled across all
        of its documents rather than only its first ones. The last batch may be smaller.
        """
        if num_tokens < 1 or batch_size < 1:
            raise ConfigError(
                f"num_tokens={num_tokens} and batch_size={batch_size} must both be >= 1"
            )
        num_eval_sequences = min(self.num_sequences, -(-num_tokens // self.context_length))
        # Distinct because num_eval_sequences <= num_sequences.
        indices = np.arange(num_eval_sequences, dtype=np.int64) * self.num_sequences
        indices //= num_eval_sequences
        for start in range(0, num_eval_sequences, batch_size):
            yield self.get(indices[start : start + batch_size])

"""Rules that stop a run as diverged.

A run diverges when, before an optimizer step is applied,

- the step's loss or the global gradient norm is NaN or Inf (on any process), or
- the step's training loss exceeds the first step's loss by more than
  train.loss_divergence_margin nats (the first step's loss is that of the initial weights,
  about ln(vocabulary size) from scratch),

or when re-projection cannot decompose a weight (DecompositionError: NaN, Inf or an SVD that
does not converge). The training loop then stops, keeps the last finite checkpoint and
writes status "diverged".
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class DivergenceMonitor:
    """Divergence checks of one run; `reference_loss` is set by the first check."""

    margin_nats: float
    reference_loss: float | None = None

    def check(
        self, loss: float, grad_norm: float, nonfinite_on_some_rank: bool = False
    ) -> str | None:
        """Return the reason the step diverged, or None; call before optimizer.step()."""
        if nonfinite_on_some_rank or not math.isfinite(loss):
            return f"non-finite training loss ({loss})"
        if not math.isfinite(grad_norm):
            return f"non-finite gradient norm ({grad_norm})"
        if self.reference_loss is None:
            self.reference_loss = loss
            return None
        if loss > self.reference_loss + self.margin_nats:
            return (
                f"training loss {loss:.4f} exceeds the first step's loss "
                f"{self.reference_loss:.4f} by more than {self.margin_nats:g} nats"
            )
        return None

"""The two statistics behind the claim check, each a difference set against twice its SE.

Loss gap: d = mean_A - mean_B over the completed seeds of two settings, with
SE = sqrt(s_A^2 / n_A + s_B^2 / n_B) from the sample variances (Welch's standard error).

Divergence gap: d = p_A - p_B of the divergence rates of two groups of finished runs, using
the Agresti-Caffo adjustment (one diverged and one stable run added to each group) so a group
in which no run, or every run, diverged still has a non-zero standard error:
p~ = (k + 1) / (n + 2), SE = sqrt(p~_A (1 - p~_A) / (n_A + 2) + p~_B (1 - p~_B) / (n_B + 2)).

In both, |d| <= 2 SE is "within noise".
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

MIN_SEEDS = 2  # a standard error needs at least two seeds per setting


@dataclass(frozen=True)
class Gap:
    """A difference of two groups and its standard error."""

    difference: float
    standard_error: float

    @property
    def significant_below(self) -> bool:
        """True when A is lower than B by more than twice the standard error."""
        return self.difference < -2 * self.standard_error

    @property
    def significant_above(self) -> bool:
        return self.difference > 2 * self.standard_error


def loss_gap(losses_a: list[float], losses_b: list[float]) -> Gap | None:
    """Welch-style gap of two groups of seed losses; None with fewer than MIN_SEEDS in either."""
    if len(losses_a) < MIN_SEEDS or len(losses_b) < MIN_SEEDS:
        return None
    difference = statistics.fmean(losses_a) - statistics.fmean(losses_b)
    variance = statistics.variance(losses_a) / len(losses_a)
    variance += statistics.variance(losses_b) / len(losses_b)
    return Gap(difference, math.sqrt(variance))


def divergence_gap(diverged_a: int, finished_a: int, diverged_b: int, finished_b: int) -> Gap:
    """Agresti-Caffo gap of two divergence rates (diverged runs out of finished runs)."""
    p_a = (diverged_a + 1) / (finished_a + 2)
    p_b = (diverged_b + 1) / (finished_b + 2)
    variance = p_a * (1 - p_a) / (finished_a + 2) + p_b * (1 - p_b) / (finished_b + 2)
    return Gap(p_a - p_b, math.sqrt(variance))

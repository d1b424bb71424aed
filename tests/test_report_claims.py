"""Claim verdicts on synthetic tables: each flips with the data; 1 seed or noise is inconclusive."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from overparam.report.claims import (
    DOES_NOT_HOLD,
    HOLDS,
    INCONCLUSIVE,
    check_claims,
    lr_regimes,
)
from overparam.report.runs import RunRecord, Setting
from overparam.report.stats import divergence_gap, loss_gap
from overparam.report.tables import build_table

LRS = [1e-4, 1e-3, 1e-2, 1e-1]
LOW, HIGH = LRS[:2], LRS[2:]
D = "diverged"


def make_table(spec: dict[tuple[str, int], dict[float, list]], finetune: bool = False):
    """spec: (parameterization, period) -> {lr: [loss or "diverged" per seed]}."""
    runs = []
    for (parameterization, period), by_lr in spec.items():
        for lr, outcomes in by_lr.items():
            for seed, outcome in enumerate(outcomes):
                setting = Setting(parameterization, period, lr)
                run = RunRecord(
                    Path(f"/x/{parameterization}{period}/{lr}/{seed}"),
                    setting,
                    seed,
                    finetune,
                    "completed",
                )
                if outcome == D:
                    run.status, run.diverged_step = "diverged", 10
                else:
                    run.final_eval_loss = outcome
                runs.append(run)
    return build_table("t", runs)


def verdict(key: str, scratch=None, finetune=None) -> str:
    claims = {claim.key: claim for claim in check_claims(scratch, finetune)}
    return claims[key].verdict


def same(values, lrs=LRS):
    return {lr: list(values) for lr in lrs}


def test_regimes_split_halves():
    assert lr_regimes(LRS) == (LOW, HIGH)
    assert lr_regimes([1, 2, 3]) == ([1], [3])  # the middle rate is in neither
    assert lr_regimes([1]) == ([], [])


def test_stats_loss_gap_closed_form():
    gap = loss_gap([1.0, 3.0], [0.0, 0.0, 3.0])
    # means 2 and 1; sample variances 2 and 3; SE^2 = 2/2 + 3/3 = 2.
    assert gap.difference == pytest.approx(1.0)
    assert gap.standard_error == pytest.approx(math.sqrt(2.0))
    assert loss_gap([1.0], [1.0, 2.0]) is None


def test_stats_divergence_gap_closed_form():
    gap = divergence_gap(4, 4, 0, 4)
    # adjusted rates 5/6 and 1/6, each with variance (5/36) / 6.
    assert gap.difference == pytest.approx(4 / 6)
    assert gap.standard_error == pytest.approx(math.sqrt(2 * 5 / 36 / 6))


@pytest.mark.parametrize(
    ("decomposed", "expected"),
    [
        ([2.50, 2.51], HOLDS),
        ([3.50, 3.51], DOES_NOT_HOLD),
        ([D, D], DOES_NOT_HOLD),  # diverging at a low rate is no gain
        ([2.90, 3.10], INCONCLUSIVE),  # gap within 2 SE
        ([2.50], INCONCLUSIVE),  # one seed
    ],
)
def test_claim_low_lr_gain(decomposed, expected):
    n = len(decomposed)
    table = make_table(
        {("dense", 0): same([3.00, 3.01][:n], LOW), ("SvecVD", 0): same(decomposed, LOW)}
    )
    assert verdict("low_lr_gain", table) == expected


@pytest.mark.parametrize(
    ("dense", "decomposed", "expected"),
    [
        ([3.0, 3.0], [D, D], HOLDS),
        ([D, D], [3.0, 3.0], DOES_NOT_HOLD),
        ([3.0, 3.0], [3.0, D], INCONCLUSIVE),  # 2/4 against 0/4: within noise
        ([3.0], [D], INCONCLUSIVE),  # one seed
    ],
)
def test_claim_high_lr_divergence(dense, decomposed, expected):
    stable = same([3.0] * len(dense), LOW)
    spec = {
        ("dense", 0): {**stable, **same(dense, HIGH)},
        ("SvecVD", 0): {**stable, **same(decomposed, HIGH)},
    }
    table = make_table(spec)
    assert verdict("high_lr_divergence", table) == expected


def test_claim_high_lr_ignores_low_rates():
    # Divergence at the low rates must not count: only the upper half of the grid is "high".
    table = make_table(
        {
            ("dense", 0): {**same([3.0, 3.0], HIGH), **same([D, D], LOW)},
            ("SvecVD", 0): same([D, D], HIGH),
        }
    )
    assert verdict("high_lr_divergence", table) == HOLDS


@pytest.mark.parametrize(
    ("svd", "iiw", "expected"),
    [
        ([3.000, 3.001], [3.000, 3.001], HOLDS),  # equal to well within the 1% margin
        ([3.20, 3.21], [3.00, 3.01], HOLDS),  # SVD worse
        ([2.50, 2.51], [3.00, 3.01], DOES_NOT_HOLD),
        ([2.90, 3.10], [3.00, 3.001], INCONCLUSIVE),  # noise wider than the margin
        ([3.0], [3.0], INCONCLUSIVE),
    ],
)
def test_claim_svd_not_better(svd, iiw, expected):
    table = make_table({("SvecVD", 0): same(svd), ("IvecIW", 0): same(iiw)})
    assert verdict("svd_not_better", table) == expected


@pytest.mark.parametrize(
    ("matrix", "vector", "expected"),
    [
        ([2.80, 2.81], [3.00, 3.01], HOLDS),
        ([3.20, 3.21], [3.00, 3.01], DOES_NOT_HOLD),
        ([2.90, 3.10], [3.00, 3.01], INCONCLUSIVE),
        ([2.80], [3.00], INCONCLUSIVE),
    ],
)
def test_claim_matrix_s(matrix, vector, expected):
    table = make_table({("ImatIW", 128): same(matrix), ("IvecIW", 128): same(vector)})
    assert verdict("matrix_s", table) == expected


@pytest.mark.parametrize(
    ("reprojected", "free", "lrs", "expected"),
    [
        ([D, D], [3.0, 3.0], LRS, HOLDS),
        ([3.0, 3.0], [D, D], LRS, DOES_NOT_HOLD),
        ([3.0, D], [3.0, 3.0], LOW, INCONCLUSIVE),  # 2/4 against 0/4: within noise
        ([3.0, D], [3.0, 3.0], LRS, HOLDS),  # 4/8 against 0/8: beyond 2 SE
        ([D], [3.0], LRS, INCONCLUSIVE),
    ],
)
def test_claim_reprojection_divergence(reprojected, free, lrs, expected):
    table = make_table({("SvecVD", 128): same(reprojected, lrs), ("SvecVD", 0): same(free, lrs)})
    assert verdict("reprojection_divergence", table) == expected


@pytest.mark.parametrize(
    ("decomposed", "expected"),
    [
        ([3.000, 3.001], HOLDS),
        ([2.50, 2.51], DOES_NOT_HOLD),
        ([D, D], DOES_NOT_HOLD),
        ([2.90, 3.10], INCONCLUSIVE),
        ([3.0], INCONCLUSIVE),
    ],
)
def test_claim_finetune_similar(decomposed, expected):
    n = len(decomposed)
    spec = {("dense", 0): same([3.000, 3.001][:n], LOW), ("SmatVD", 0): same(decomposed, LOW)}
    assert verdict("finetune_similar", finetune=make_table(spec, finetune=True)) == expected


def test_claims_without_runs_inconclusive():
    assert {claim.verdict for claim in check_claims(None, None)} == {INCONCLUSIVE}

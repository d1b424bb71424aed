"""Each claim check on synthetic results where the claim holds and where it fails."""

from __future__ import annotations

from dataclasses import replace

import pytest

from overparam.toy2d.claims import check_claims, rank_by_speed
from overparam.toy2d.config import MODELS, MODELS_BY_KEY
from overparam.toy2d.metrics import ModelSummary

STEPS = 1000
FLOOR = 4e-32

# A synthetic result where every observation of the study holds.
SPEED = {
    "ImatIW+reproject": 50.0,
    "IvecIW+reproject": 55.0,
    "SmatVD+reproject": 60.0,
    "SvecVD+reproject": 66.0,
    "ImatIW": 70.0,
    "IvecIW": 77.0,
    "SmatVD": 80.0,
    "SvecVD": 88.0,
    "dense": 400.0,
}
CURVATURE = {
    "dense": 1.0,
    "ImatIW+reproject": 1.0 + 1e-12,
    "IvecIW+reproject": 1.01,
    "SvecVD+reproject": 1.05,
    "SmatVD+reproject": 1.04,
    "SvecVD": 1.06,
    "SmatVD": 1.05,
    "IvecIW": 1.03,
    "ImatIW": 1.02,
}


def _plateau_curve(level: float, decades_per_step: float = 0.1) -> list[float]:
    """10^(-t * rate) until ``level``, then flat, over STEPS + 1 points."""
    return [max(10.0 ** (-step * decades_per_step), level) for step in range(STEPS + 1)]


def _summary(key: str, speed: float, curvature: float, loss_mean: list[float]) -> ModelSummary:
    spec = MODELS_BY_KEY[key]
    return ModelSummary(
        key=key,
        label=spec.label,
        parameterization=spec.parameterization,
        reproject=spec.reproject,
        parameter_count=0,
        runs_diverged=0,
        steps_to_loss={"1e-06": [int(speed) // 2], "1e-12": [int(speed)]},
        speed_steps=speed,
        area_above_speed_threshold=6.0 * speed,
        curvature=[curvature],
        loss_mean=loss_mean,
        loss_min=loss_mean,
        loss_max=loss_mean,
        trajectory=[[0.0, 0.0]],
    )


def _holding_result(**changes: dict) -> dict[str, ModelSummary]:
    """The all-holding result with some models' fields replaced: key -> {field: value}."""
    curve = _plateau_curve(3e-31)
    summaries = {
        spec.key: _summary(spec.key, SPEED[spec.key], CURVATURE[spec.key], curve) for spec in MODELS
    }
    for key, fields in changes.items():
        summaries[key] = replace(summaries[key], **fields)
    return summaries


def _check(summaries: dict[str, ModelSummary], claim_id: str):
    checks = {check.claim_id: check for check in check_claims(summaries, FLOOR, STEPS)}
    return checks[claim_id]


@pytest.mark.parametrize(
    "claim_id",
    [
        "speed_ordering",
        "matrix_s_slightly_faster",
        "dense_far_behind",
        "trajectory_shapes",
        "float64_plateau",
    ],
)
def test_claim_holds_on_holding_result(claim_id):
    check = _check(_holding_result(), claim_id)
    assert check.holds, check.evidence
    assert check.verdict == "holds"


def test_rank_by_speed_breaks_ties_by_area():
    summaries = _holding_result(
        SmatVD={"speed_steps": 77.0, "area_above_speed_threshold": 1.0},
    )
    ranking = rank_by_speed(summaries)
    assert ranking[0] == "ImatIW+reproject"
    assert ranking[-1] == "dense"
    # IvecIW also needs 77 steps but has the larger area, so SmatVD ranks first.
    assert ranking.index("SmatVD") == ranking.index("IvecIW") - 1


def test_speed_ordering_fails_free_iiw_before_svd_reprojected():
    # IvecIW (free) 62 beats SvecVD (re-projected) 66: the vector-S order breaks.
    check = _check(_holding_result(IvecIW={"speed_steps": 62.0}), "speed_ordering")
    assert not check.holds
    assert check.verdict == "does not hold"
    assert "Vector S" in check.evidence
    assert "not in the claimed order" in check.evidence


def test_speed_ordering_fails_on_tie_broken_by_area():
    # Same steps as SmatVD (re-projected) but a larger area: ImatIW (re-projected) is slower.
    summaries = _holding_result(
        **{"ImatIW+reproject": {"speed_steps": 60.0, "area_above_speed_threshold": 999.0}}
    )
    assert not _check(summaries, "speed_ordering").holds


def test_matrix_s_fails_when_matrix_slower():
    summaries = _holding_result(SmatVD={"speed_steps": 90.0})
    assert not _check(summaries, "matrix_s_slightly_faster").holds


def test_matrix_s_fails_when_far_faster():
    # 2.2x fewer steps is more than "slightly".
    summaries = _holding_result(**{"ImatIW+reproject": {"speed_steps": 25.0}})
    check = _check(summaries, "matrix_s_slightly_faster")
    assert not check.holds
    assert "ratio 2.20" in check.evidence


def test_dense_far_behind_fails_when_close():
    # 150 < 2 x 88 steps of SvecVD (free), the slowest decomposed model.
    check = _check(_holding_result(dense={"speed_steps": 150.0}), "dense_far_behind")
    assert not check.holds
    assert "ratio 1.70" in check.evidence


def test_dense_far_behind_fails_when_not_slowest():
    summaries = _holding_result(SvecVD={"speed_steps": 500.0})
    assert not _check(summaries, "dense_far_behind").holds


@pytest.mark.parametrize(
    ("key", "curvature"),
    [
        ("dense", 1.01),  # dense curves
        ("ImatIW+reproject", 1.001),  # ImatIW curves
        ("SvecVD+reproject", 1.0),  # an SVD model is straight
        ("IvecIW+reproject", 1.0),  # an IIW re-projected model other than ImatIW is straight
        ("SvecVD", 1.005),  # an SVD model curves less than IvecIW (re-projected)
        ("ImatIW", 1.009),  # a free model curves less than IvecIW (re-projected)
    ],
)
def test_trajectory_shapes_fail(key, curvature):
    summaries = _holding_result(**{key: {"curvature": [curvature]}})
    assert not _check(summaries, "trajectory_shapes").holds


def test_trajectory_shapes_fail_when_all_runs_diverged():
    summaries = _holding_result(dense={"curvature": [None]})
    assert not _check(summaries, "trajectory_shapes").holds


def test_plateau_fails_when_falling_below_floor():
    # Falling 1 decade per 25 steps down to 1e-40, far below eps² · mean(y²) = 4e-32.
    falling = _plateau_curve(0.0, decades_per_step=1 / 25)
    summaries = _holding_result(**{"ImatIW+reproject": {"loss_mean": falling}})
    check = _check(summaries, "float64_plateau")
    assert not check.holds
    assert "Lowest: ImatIW (re-projected)" in check.evidence


def test_plateau_holds_with_late_model():
    # IvecIW (free) reaches the floor only in the last window: not flat yet, but no evidence
    # against a plateau.
    late = _plateau_curve(3e-31, decades_per_step=1 / 30)
    summaries = _holding_result(IvecIW={"loss_mean": late})
    check = _check(summaries, "float64_plateau")
    assert check.holds, check.evidence
    assert "IvecIW (free)" not in check.evidence.split("Lowest")[0]


def test_plateau_fails_at_float32_level():
    # Every model flattens at 1e-15, far above eps² · mean(y²) of float64.
    curve = _plateau_curve(1e-15)
    summaries = _holding_result(**{spec.key: {"loss_mean": curve} for spec in MODELS})
    check = _check(summaries, "float64_plateau")
    assert not check.holds
    assert "No model" in check.evidence


def test_check_claims_results_serializable():
    checks = check_claims(_holding_result(), FLOOR, STEPS)
    dicts = [check.to_dict() for check in checks]
    assert [d["verdict"] for d in dicts] == ["holds"] * 5
    assert all(
        set(d) == {"claim_id", "statement", "measure", "evidence", "holds", "verdict"}
        for d in dicts
    )

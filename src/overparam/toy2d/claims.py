"""Check the observations of the study's 2x2 experiment against measured results.

Every verdict is computed from the model summaries. The definitions and thresholds below
are part of the output, so a reader can see what "faster" or "straight" meant.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from overparam.toy2d.config import MODELS_BY_KEY
from overparam.toy2d.metrics import SPEED_THRESHOLD, ModelSummary

SPEED_DEFINITION = (
    f"speed = mean steps to reach a loss of {SPEED_THRESHOLD:.0e} over the runs, a run that "
    "never reaches it counted as steps + 1; ties are broken by the mean area of "
    f"log10(loss) above {SPEED_THRESHOLD:.0e} (decades x steps). Fewer steps is faster."
)

# "Slightly faster": the vector-S model needs less than this many times the matrix-S steps.
SLIGHT_SPEEDUP_MAX = 2.0
# "Far behind": dense needs at least this many times the steps of the slowest other model.
FAR_BEHIND_MIN_RATIO = 2.0
# A trajectory is straight when its curvature (path length / distance) is <= 1 + this.
STRAIGHT_TOLERANCE = 1e-6
# Plateau windows: the last 10% of the steps and the 10% before them.
PLATEAU_WINDOW_FRACTION = 0.1
# Flat: the median loss of the last window is at least this fraction of the previous one.
PLATEAU_MIN_RATIO = 0.1
# At float64 precision: within this factor of eps² · mean(y²), above or below.
FLOOR_FACTOR = 1e4

# Vector-S and matrix-S versions of the four decomposed model kinds, for pairwise checks.
VECTOR_MATRIX_PAIRS = (
    ("SvecVD+reproject", "SmatVD+reproject"),
    ("SvecVD", "SmatVD"),
    ("IvecIW+reproject", "ImatIW+reproject"),
    ("IvecIW", "ImatIW"),
)
# Claimed order from fastest to slowest, per kind of S.
CLAIMED_ORDER = {
    "Vector S": ("IvecIW+reproject", "SvecVD+reproject", "IvecIW", "SvecVD"),
    "Matrix S": ("ImatIW+reproject", "SmatVD+reproject", "ImatIW", "SmatVD"),
}
STRAIGHT_MODELS = ("dense", "ImatIW+reproject")


@dataclass(frozen=True)
class ClaimCheck:
    """One observation of the study, how it was measured, the evidence and the verdict."""

    claim_id: str
    statement: str
    measure: str
    evidence: str
    holds: bool

    @property
    def verdict(self) -> str:
        return "holds" if self.holds else "does not hold"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


def rank_by_speed(summaries: Mapping[str, ModelSummary]) -> list[str]:
    """Model keys from the fastest to the slowest."""
    return sorted(summaries, key=lambda key: summaries[key].speed_key)


def check_claims(
    summaries: Mapping[str, ModelSummary], loss_floor: float, steps: int
) -> list[ClaimCheck]:
    """Check all five observations; ``loss_floor`` is eps² · mean(y²) of the problem."""
    return [
        check_speed_ordering(summaries),
        check_matrix_s_faster(summaries),
        check_dense_far_behind(summaries),
        check_trajectory_shapes(summaries),
        check_float64_plateau(summaries, loss_floor, steps),
    ]


def check_speed_ordering(summaries: Mapping[str, ModelSummary]) -> ClaimCheck:
    """Check IIW re-projected > SVD re-projected > IIW free > SVD free, for each kind of S."""
    parts = []
    holds = True
    for s_kind, order in CLAIMED_ORDER.items():
        in_order = all(
            summaries[faster].speed_key < summaries[slower].speed_key
            for faster, slower in zip(order, order[1:], strict=False)
        )
        holds &= in_order
        measured = ", ".join(f"{_label(k)} {summaries[k].speed_steps:.1f}" for k in order)
        verdict = "in the claimed order" if in_order else "not in the claimed order"
        parts.append(f"{s_kind}: {measured} ({verdict})")
    return ClaimCheck(
        claim_id="speed_ordering",
        statement="By speed: IIW re-projected > SVD re-projected > IIW free > SVD free.",
        measure=f"{SPEED_DEFINITION} The order must hold for vector S and for matrix S.",
        evidence="Speed in mean steps to 1e-12. " + ". ".join(parts) + ".",
        holds=holds,
    )


def check_matrix_s_faster(summaries: Mapping[str, ModelSummary]) -> ClaimCheck:
    """Check that each matrix-S model beats its vector-S version by less than 2x."""
    parts = []
    holds = True
    for vector_key, matrix_key in VECTOR_MATRIX_PAIRS:
        vector, matrix = summaries[vector_key], summaries[matrix_key]
        faster = matrix.speed_key < vector.speed_key
        ratio = _ratio(vector.speed_steps, matrix.speed_steps)
        slight = ratio < SLIGHT_SPEEDUP_MAX
        holds &= faster and slight
        outcome = "faster" if faster else "not faster"
        parts.append(
            f"{_label(matrix_key)} {matrix.speed_steps:.1f} vs {_label(vector_key)} "
            f"{vector.speed_steps:.1f}: {outcome}, ratio {ratio:.2f}"
        )
    return ClaimCheck(
        claim_id="matrix_s_slightly_faster",
        statement="Matrix S is slightly faster than vector S.",
        measure=(
            f"{SPEED_DEFINITION} In each of the four pairs (SVD/IIW, re-projected/free) the "
            "matrix-S model must be faster, and the vector-S model must need less than "
            f"{SLIGHT_SPEEDUP_MAX:g} times its steps."
        ),
        evidence="Speed in mean steps to 1e-12. " + ". ".join(parts) + ".",
        holds=holds,
    )


def check_dense_far_behind(summaries: Mapping[str, ModelSummary]) -> ClaimCheck:
    """Check that dense is the slowest and needs 2x the steps of the next slowest."""
    dense = summaries["dense"]
    others = [key for key in summaries if key != "dense"]
    slowest = max(others, key=lambda key: summaries[key].speed_key)
    ratio = _ratio(dense.speed_steps, summaries[slowest].speed_steps)
    is_slowest = dense.speed_key > summaries[slowest].speed_key
    holds = is_slowest and ratio >= FAR_BEHIND_MIN_RATIO
    return ClaimCheck(
        claim_id="dense_far_behind",
        statement="Dense is far behind the decomposed models.",
        measure=(
            f"{SPEED_DEFINITION} Dense must be the slowest model and need at least "
            f"{FAR_BEHIND_MIN_RATIO:g} times the steps of the slowest decomposed model."
        ),
        evidence=(
            f"Mean steps to 1e-12: dense {dense.speed_steps:.1f}, slowest decomposed model "
            f"{_label(slowest)} {summaries[slowest].speed_steps:.1f} (ratio {ratio:.2f}); "
            f"dense is {'' if is_slowest else 'not '}the slowest."
        ),
        holds=holds,
    )


def check_trajectory_shapes(summaries: Mapping[str, ModelSummary]) -> ClaimCheck:
    """Check that dense and ImatIW move straight and the others curve, SVD and free most."""
    curvature = {key: summary.curvature_mean for key, summary in summaries.items()}

    def is_straight(key: str) -> bool:
        return curvature[key] <= 1 + STRAIGHT_TOLERANCE  # False for NaN

    straight_ok = all(is_straight(key) for key in STRAIGHT_MODELS)
    curved_keys = [key for key in summaries if key not in STRAIGHT_MODELS]
    curved_ok = all(curvature[key] > 1 + STRAIGHT_TOLERANCE for key in curved_keys)

    # SVD and free models must curve more than every IIW re-projected model.
    most_curved = [key for key in summaries if _is_svd_or_free(key)]
    least_curved = [key for key in summaries if key not in most_curved and key != "dense"]
    ranking_ok = all(
        curvature[high] > curvature[low] for high in most_curved for low in least_curved
    )

    listed = ", ".join(f"{_label(key)} {curvature[key]:.9f}" for key in summaries)
    checks = [
        f"dense and ImatIW (re-projected) straight: {_yes_no(straight_ok)}",
        f"all others curved: {_yes_no(curved_ok)}",
        f"every SVD or free model curves more than every IIW re-projected model: "
        f"{_yes_no(ranking_ok)}",
    ]
    return ClaimCheck(
        claim_id="trajectory_shapes",
        statement=(
            "Dense and ImatIW predictions move in a straight line; the others curve, the SVD "
            "and free models the most."
        ),
        measure=(
            "curvature = path length of the prediction W x / distance from its start to its "
            "end, per input, averaged over inputs and runs (1 means straight). Straight: "
            f"curvature <= 1 + {STRAIGHT_TOLERANCE:g}. ImatIW means the re-projected model."
        ),
        evidence=f"Mean curvature: {listed}. " + "; ".join(checks) + ".",
        holds=straight_ok and curved_ok and ranking_ok,
    )


def check_float64_plateau(
    summaries: Mapping[str, ModelSummary], loss_floor: float, steps: int
) -> ClaimCheck:
    """Check that the loss flattens at the float64 rounding level and no model settles below."""
    window = max(1, round((steps + 1) * PLATEAU_WINDOW_FRACTION))
    band = FLOOR_FACTOR * loss_floor

    levels = {}
    flat_at_floor = []
    for key, summary in summaries.items():
        curve = summary.loss_mean
        previous = statistics.median(curve[-2 * window : -window] or curve[:1])
        level = statistics.median(curve[-window:])
        levels[key] = level
        in_band = previous <= band and level <= band
        if in_band and (previous == 0 or level >= PLATEAU_MIN_RATIO * previous):
            flat_at_floor.append(key)

    # A NaN level (every run diverged) is no evidence either way, so it is left out.
    finite_levels = {key: level for key, level in levels.items() if level == level}
    lowest = min(finite_levels, key=finite_levels.get) if finite_levels else None
    not_below = lowest is None or levels[lowest] >= loss_floor / FLOOR_FACTOR

    if flat_at_floor:
        found = "Flat at the floor: " + "; ".join(
            f"{_label(key)} {levels[key]:.2e} ({levels[key] / loss_floor:.3g} x floor)"
            for key in flat_at_floor
        )
    else:
        found = "No model is flat within the band"
    if lowest is not None:
        found += (
            f". Lowest: {_label(lowest)} {levels[lowest]:.2e} "
            f"({levels[lowest] / loss_floor:.3g} x floor)"
        )
    return ClaimCheck(
        claim_id="float64_plateau",
        statement="The loss reaches a plateau at float64 precision.",
        measure=(
            f"Level = median of a model's mean loss over the last {window} steps; floor = "
            "eps² · mean(y²), the squared float64 rounding error of the targets. At least "
            f"one model must be flat at the floor: its level and its median over the {window} "
            f"steps before are at most {FLOOR_FACTOR:g} x floor, and the level is at "
            f"least {PLATEAU_MIN_RATIO:g} times the median before. No model's level may be "
            f"below floor / {FLOOR_FACTOR:g}."
        ),
        evidence=f"float64 floor eps² · mean(y²) = {loss_floor:.2e}. {found}.",
        holds=bool(flat_at_floor) and not_below,
    )


def _ratio(numerator: float, denominator: float) -> float:
    """Ratio of two step counts; a count of 0 means the loss started below the threshold."""
    if denominator == 0:
        return 1.0 if numerator == 0 else math.inf
    return numerator / denominator


def _is_svd_or_free(key: str) -> bool:
    spec = MODELS_BY_KEY[key]
    return not spec.is_dense and (spec.is_svd or not spec.reproject)


def _label(key: str) -> str:
    return MODELS_BY_KEY[key].label


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def verdicts(checks: list[ClaimCheck]) -> dict[str, str]:
    """Claim id -> verdict."""
    return {check.claim_id: check.verdict for check in checks}

"""Set each finding of the study against the measured data and compute a verdict.

Every verdict comes from the tables by the rules below, never by hand:

- A claim is tested by comparisons of matched settings (same learning rate and, where it
  applies, same re-projection period). Each comparison supports the claim, contradicts it,
  is within noise, or is left out (fewer than two finished seeds on a side).
- Claims about losses vote over the decided comparisons (supports, contradicts or within
  noise). The claim holds when more than half support it and does not hold when more than
  half contradict it. Otherwise, or when no comparison has enough seeds, it is inconclusive.
- Claims about divergence pool all runs of the compared groups and use one divergence gap.

"Low" learning rates are the lower half of the from-scratch grid and "high" the upper half;
with an odd number of rates the middle one is in neither.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from overparam.parameterizations import DECOMPOSED
from overparam.report.cells import CellStats, format_cell
from overparam.report.stats import MIN_SEEDS, Gap, divergence_gap, loss_gap
from overparam.report.tables import Row, StudyTable, format_lr, row_label

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
INCONCLUSIVE = "inconclusive"

SUPPORTS = "supports"
CONTRADICTS = "contradicts"
NOISE = "within noise"
LEFT_OUT = "left out"

# Margin of the two "no difference" claims, relative to the reference setting's mean loss:
# a gap counts as small when its 2-SE interval lies inside +-1% of that loss.
EQUIVALENCE_MARGIN = 0.01

DENSE: Row = ("dense", 0)
SVD_TO_IIW = {"SvecVD": "IvecIW", "SmatVD": "ImatIW"}
VECTOR_TO_MATRIX = {"SvecVD": "SmatVD", "IvecIW": "ImatIW"}


@dataclass
class Comparison:
    """One matched comparison: setting A against setting B."""

    label: str
    a: str  # the cell text of A, as in the tables
    b: str
    outcome: str
    gap: Gap | None = None
    note: str = ""


@dataclass
class ClaimResult:
    """A finding of the study, how it was tested, and the verdict from the data."""

    key: str
    statement: str
    test: str
    verdict: str
    reason: str
    comparisons: list[Comparison] = field(default_factory=list)


def lr_regimes(lrs: list[float]) -> tuple[list[float], list[float]]:
    """Split a sorted learning-rate grid into its lower and upper halves."""
    half = len(lrs) // 2
    return lrs[:half], lrs[len(lrs) - half :]


def _vote(comparisons: list[Comparison]) -> tuple[str, str]:
    decided = [c for c in comparisons if c.outcome != LEFT_OUT]
    if not decided:
        return INCONCLUSIVE, f"no comparison has {MIN_SEEDS} or more finished seeds on both sides"
    counts = {
        outcome: sum(c.outcome == outcome for c in decided)
        for outcome in (SUPPORTS, CONTRADICTS, NOISE)
    }
    summary = (
        f"{counts[SUPPORTS]} of {len(decided)} decided comparisons support, "
        f"{counts[CONTRADICTS]} contradict, {counts[NOISE]} within noise "
        f"({len(comparisons) - len(decided)} left out)"
    )
    if counts[SUPPORTS] * 2 > len(decided):
        return HOLDS, summary
    if counts[CONTRADICTS] * 2 > len(decided):
        return DOES_NOT_HOLD, summary
    return INCONCLUSIVE, summary


def _compare_cells(
    label: str,
    a: CellStats | None,
    b: CellStats | None,
    judge: Callable[[Gap, float], str],
    divergence_decides: bool,
) -> Comparison:
    """Compare the losses of two cells; `judge(gap, reference_loss)` returns the outcome.

    With `divergence_decides`, a side whose seeds all diverged, while the other side completed
    all of its seeds, decides the comparison because the diverged side is worse. Without it,
    such a comparison is left out.
    """
    comparison = Comparison(label, format_cell(a), format_cell(b), LEFT_OUT)
    if a is None or b is None:
        comparison.note = "missing setting"
        return comparison
    if a.n_finished < MIN_SEEDS or b.n_finished < MIN_SEEDS:
        comparison.note = "too few finished seeds"
        return comparison

    gap = loss_gap(a.losses, b.losses)
    if gap is None:
        a_lost = a.n == 0 and a.n_diverged > 0 and b.clean
        b_lost = b.n == 0 and b.n_diverged > 0 and a.clean
        if divergence_decides and (a_lost or b_lost):
            comparison.outcome = "a diverged" if a_lost else "b diverged"
        else:
            comparison.note = "too few completed seeds"
        return comparison

    comparison.gap = gap
    comparison.outcome = judge(gap, b.mean)  # type: ignore[arg-type]
    return comparison


def _lower(gap: Gap, reference: float) -> str:
    """Judge the claim "A reaches a lower loss than B"."""
    if gap.significant_below:
        return SUPPORTS
    return CONTRADICTS if gap.significant_above else NOISE


def _not_better(gap: Gap, reference: float) -> str:
    """Judge the claim "A is not lower than B by more than the margin"."""
    margin = EQUIVALENCE_MARGIN * abs(reference)
    if gap.difference - 2 * gap.standard_error > -margin:
        return SUPPORTS
    return CONTRADICTS if gap.difference + 2 * gap.standard_error < -margin else NOISE


def _equivalent(gap: Gap, reference: float) -> str:
    """Judge the claim "A and B are within the margin of each other"."""
    margin = EQUIVALENCE_MARGIN * abs(reference)
    if abs(gap.difference) + 2 * gap.standard_error < margin:
        return SUPPORTS
    return CONTRADICTS if abs(gap.difference) - 2 * gap.standard_error > margin else NOISE


def _resolve_divergence(comparison: Comparison, a_diverging_supports: bool | None) -> None:
    """Turn 'a diverged' / 'b diverged' into an outcome; None leaves the comparison out."""
    if comparison.outcome not in ("a diverged", "b diverged"):
        return
    if a_diverging_supports is None:
        comparison.outcome, comparison.note = LEFT_OUT, "diverged"
        return
    a_diverged = comparison.outcome == "a diverged"
    comparison.note = f"{'A' if a_diverged else 'B'} diverged in every seed"
    comparison.outcome = SUPPORTS if a_diverged == a_diverging_supports else CONTRADICTS


def _decomposed_rows(table: StudyTable) -> list[Row]:
    return [row for row in table.rows if row[0] in DECOMPOSED]


def check_low_lr_gain(table: StudyTable, low_lrs: list[float]) -> ClaimResult:
    comparisons = []
    for lr in low_lrs:
        for row in _decomposed_rows(table):
            label = f"{row_label(row)} vs dense, lr {format_lr(lr)}"
            comparison = _compare_cells(
                label, table.cell(row, lr), table.cell(DENSE, lr), _lower, divergence_decides=True
            )
            _resolve_divergence(comparison, a_diverging_supports=False)
            comparisons.append(comparison)
    verdict, reason = _vote(comparisons)
    return ClaimResult(
        "low_lr_gain",
        "At low learning rates the decomposed forms reach a lower loss than dense.",
        "Each decomposed row against dense at each low learning rate: supports when its mean "
        "loss is lower by more than 2 SE; a decomposed setting that diverged in every seed "
        "contradicts.",
        verdict,
        reason,
        comparisons,
    )


def _divergence_counts(table: StudyTable, settings: list[tuple[Row, float]]) -> tuple[int, int]:
    diverged = finished = 0
    for row, lr in settings:
        cell = table.cell(row, lr)
        if cell is not None and cell.n_finished >= MIN_SEEDS:
            diverged += cell.n_diverged
            finished += cell.n_finished
    return diverged, finished


def _pooled_verdict(
    k_a: int, n_a: int, k_b: int, n_b: int, names: tuple[str, str]
) -> tuple[str, str, Gap | None]:
    if n_a == 0 or n_b == 0:
        reason = f"no settings with {MIN_SEEDS} or more finished seeds to compare"
        return INCONCLUSIVE, reason, None
    gap = divergence_gap(k_a, n_a, k_b, n_b)
    reason = (
        f"{names[0]} diverged in {k_a}/{n_a} runs, {names[1]} in {k_b}/{n_b}; adjusted gap "
        f"{gap.difference:+.2f}, 2 SE {2 * gap.standard_error:.2f}"
    )
    if gap.significant_above:
        return HOLDS, reason, gap
    if gap.significant_below:
        return DOES_NOT_HOLD, reason, gap
    return INCONCLUSIVE, reason + " (within noise)", gap


def _divergence_comparison(table: StudyTable, a: Row, b: Row, lr: float) -> Comparison:
    label = f"{row_label(a)} vs {row_label(b)}, lr {format_lr(lr)}"
    cell_a, cell_b = table.cell(a, lr), table.cell(b, lr)
    comparison = Comparison(label, format_cell(cell_a), format_cell(cell_b), "pooled")
    if cell_a is None or cell_b is None:
        comparison.outcome, comparison.note = LEFT_OUT, "missing setting"
    elif min(cell_a.n_finished, cell_b.n_finished) < MIN_SEEDS:
        comparison.outcome, comparison.note = LEFT_OUT, "too few finished seeds"
    return comparison


def check_high_lr_divergence(table: StudyTable, high_lrs: list[float]) -> ClaimResult:
    decomposed = [(row, lr) for lr in high_lrs for row in _decomposed_rows(table)]
    dense = [(DENSE, lr) for lr in high_lrs]
    comparisons = [_divergence_comparison(table, row, DENSE, lr) for row, lr in decomposed]

    k_x, n_x = _divergence_counts(table, decomposed)
    k_d, n_d = _divergence_counts(table, dense)
    verdict, reason, _ = _pooled_verdict(k_x, n_x, k_d, n_d, ("decomposed", "dense"))
    if verdict == HOLDS and k_d * 2 >= n_d:
        verdict, reason = INCONCLUSIVE, reason + "; dense diverged in half its runs or more"
    return ClaimResult(
        "high_lr_divergence",
        "At high learning rates the decomposed forms diverge while dense stays stable.",
        "Divergence rate of all decomposed runs against dense runs at the high learning "
        "rates (divergence gap, pooled over settings); holds when it is higher by more "
        "than 2 SE and dense diverged in fewer than half its runs.",
        verdict,
        reason,
        comparisons,
    )


def check_svd_not_better(table: StudyTable) -> ClaimResult:
    comparisons = []
    for row in _decomposed_rows(table):
        iiw = SVD_TO_IIW.get(row[0])
        if iiw is None or (iiw, row[1]) not in table.rows:
            continue
        for lr in table.lrs:
            label = f"{row_label(row)} vs {row_label((iiw, row[1]))}, lr {format_lr(lr)}"
            cell_svd, cell_iiw = table.cell(row, lr), table.cell((iiw, row[1]), lr)
            comparisons.append(
                _compare_cells(label, cell_svd, cell_iiw, _not_better, divergence_decides=False)
            )
    verdict, reason = _vote(comparisons)
    return ClaimResult(
        "svd_not_better",
        "SVD is not better than IIW: overparameterization, not orthogonality, drives the gain.",
        "SvecVD against IvecIW and SmatVD against ImatIW at each learning rate and period, "
        "runs that trained: supports when SVD's advantage is below the margin "
        f"({EQUIVALENCE_MARGIN:.0%} of IIW's loss) even at 2 SE, contradicts when it is "
        "above the margin even at 2 SE.",
        verdict,
        reason,
        comparisons,
    )


def check_matrix_s(table: StudyTable) -> ClaimResult:
    comparisons = []
    for row in _decomposed_rows(table):
        matrix = VECTOR_TO_MATRIX.get(row[0])
        if matrix is None or (matrix, row[1]) not in table.rows:
            continue
        for lr in table.lrs:
            label = f"{row_label((matrix, row[1]))} vs {row_label(row)}, lr {format_lr(lr)}"
            cell_matrix, cell_vector = table.cell((matrix, row[1]), lr), table.cell(row, lr)
            comparisons.append(
                _compare_cells(label, cell_matrix, cell_vector, _lower, divergence_decides=False)
            )
    verdict, reason = _vote(comparisons)
    return ClaimResult(
        "matrix_s",
        "A matrix S gives a lower loss than a vector S when training succeeds.",
        "SmatVD against SvecVD and ImatIW against IvecIW at each learning rate and period, "
        "runs that trained: supports when the matrix form's mean loss is lower by more than "
        "2 SE.",
        verdict,
        reason,
        comparisons,
    )


def check_reprojection_divergence(table: StudyTable) -> ClaimResult:
    reprojected, free, comparisons = [], [], []
    for row in _decomposed_rows(table):
        if row[1] == 0 or (row[0], 0) not in table.rows:
            continue
        for lr in table.lrs:
            comparison = _divergence_comparison(table, row, (row[0], 0), lr)
            comparisons.append(comparison)
            if comparison.outcome != LEFT_OUT:
                reprojected.append((row, lr))
                free.append(((row[0], 0), lr))

    k_r, n_r = _divergence_counts(table, reprojected)
    k_f, n_f = _divergence_counts(table, free)
    verdict, reason, _ = _pooled_verdict(k_r, n_r, k_f, n_f, ("re-projected", "free"))
    return ClaimResult(
        "reprojection_divergence",
        "Re-projection makes divergence more likely.",
        "Divergence rate of re-projected runs against free runs of the same parameterization "
        "and learning rate (divergence gap, pooled over matched settings); holds when it is "
        "higher by more than 2 SE.",
        verdict,
        reason,
        comparisons,
    )


def check_finetune_similar(table: StudyTable | None) -> ClaimResult:
    statement = "In fine-tuning the parameterizations differ little."
    test = (
        "Each decomposed row against dense at each learning rate of the fine-tuning table: "
        f"supports when the gap's 2-SE interval lies within {EQUIVALENCE_MARGIN:.0%} of dense's "
        "loss, contradicts when it lies outside, and a side that diverged in every seed "
        "while the other trained contradicts."
    )
    if table is None:
        return ClaimResult("finetune_similar", statement, test, INCONCLUSIVE, "no fine-tuning runs")
    comparisons = []
    for lr in table.lrs:
        for row in _decomposed_rows(table):
            label = f"{row_label(row)} vs dense, lr {format_lr(lr)}"
            comparison = _compare_cells(
                label,
                table.cell(row, lr),
                table.cell(DENSE, lr),
                _equivalent,
                divergence_decides=True,
            )
            if comparison.outcome in ("a diverged", "b diverged"):
                comparison.note = "one side diverged in every seed"
                comparison.outcome = CONTRADICTS
            comparisons.append(comparison)
    verdict, reason = _vote(comparisons)
    return ClaimResult("finetune_similar", statement, test, verdict, reason, comparisons)


def check_claims(scratch: StudyTable | None, finetune: StudyTable | None) -> list[ClaimResult]:
    """Run every claim; the from-scratch ones are inconclusive without a from-scratch table."""
    if scratch is None:
        empty = StudyTable("from scratch", [], [], {})
        scratch = empty
    low_lrs, high_lrs = lr_regimes(scratch.lrs)
    return [
        check_low_lr_gain(scratch, low_lrs),
        check_high_lr_divergence(scratch, high_lrs),
        check_svd_not_better(scratch),
        check_matrix_s(scratch),
        check_reprojection_divergence(scratch),
        check_finetune_similar(finetune),
    ]

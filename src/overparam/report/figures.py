"""The report's figures (PNG, matplotlib Agg): loss curves, learning-rate sensitivity, drift."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and in tests; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from overparam.report.runs import RunRecord, read_metrics  # noqa: E402
from overparam.report.tables import Row, StudyTable, format_lr, row_label  # noqa: E402

COLORS = {
    "dense": "black",
    "SvecVD": "tab:blue",
    "SmatVD": "tab:cyan",
    "IvecIW": "tab:red",
    "ImatIW": "tab:orange",
}
ORTH_KEYS = ("drift/orth_error_U", "drift/orth_error_V")
IDENTITY_KEYS = ("drift/identity_distance",)
EMA_WEIGHT = 0.9  # smoothing of the train loss; eval loss is plotted as logged


def _style(row: Row) -> dict[str, Any]:
    return {
        "color": COLORS.get(row[0], "gray"),
        "linestyle": "--" if row[1] else "-",
        "label": row_label(row),
    }


def _series(metrics: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    steps, values = [], []
    for line in metrics:
        value = line.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value) and "step" in line:
            steps.append(float(line["step"]))
            values.append(float(value))
    return steps, values


def _ema(values: list[float]) -> list[float]:
    smoothed, average = [], None
    for value in values:
        average = value if average is None else EMA_WEIGHT * average + (1 - EMA_WEIGHT) * value
        smoothed.append(average)
    return smoothed


class _MetricsCache:
    def __init__(self) -> None:
        self._cache: dict[Path, list[dict[str, Any]]] = {}

    def __call__(self, run: RunRecord) -> list[dict[str, Any]]:
        if run.path not in self._cache:
            self._cache[run.path] = read_metrics(run.path)
        return self._cache[run.path]


def _panels(n: int, rows: int = 1) -> tuple[Figure, Sequence[Any]]:
    figure, axes = plt.subplots(
        rows, n, figsize=(3.6 * n, 3.2 * rows), squeeze=False, constrained_layout=True
    )
    return figure, axes


def _legend(figure: Figure) -> None:
    """Add one legend to the whole figure, with each configuration once."""
    by_label: dict[str, Any] = {}
    for ax in figure.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            by_label.setdefault(label, handle)
    if by_label:
        figure.legend(
            list(by_label.values()), list(by_label), loc="outside right center", fontsize="small"
        )


def _runs_with_metrics(table: StudyTable) -> list[RunRecord]:
    return [run for cell in table.cells.values() for run in cell.runs if run.status != "missing"]


def _plot_panel_curves(
    ax: Any, table: StudyTable, lr: float, key: str, metrics_of: _MetricsCache
) -> list[float]:
    """Plot every run at one learning rate; return the values the y-axis must show.

    Those are the first value of each line and the last value of each run that did not
    diverge, so that only a diverged run's explosion can fall off the top.
    """
    firsts = []
    labelled: set[Row] = set()
    for row in table.rows:
        cell = table.cell(row, lr)
        for run in [] if cell is None else cell.runs:
            steps, values = _series(metrics_of(run), key)
            if not steps:
                continue
            if key == "loss/train":
                values = _ema(values)
            style = _style(row)
            if row in labelled:
                style.pop("label")
            labelled.add(row)

            ax.plot(steps, values, linewidth=1, **style)
            firsts.append(values[0])
            if run.status == "diverged":
                ax.plot(steps[-1], values[-1], marker="x", color=style["color"])
            else:
                firsts.append(values[-1])
    return firsts


def plot_loss_curves(table: StudyTable, metrics_of: _MetricsCache) -> tuple[Figure, str]:
    """Plot the loss of each run, one panel per learning rate, colored by configuration.

    Held-out loss when every run logged it at least 3 times, else the smoothed train loss
    (diverged runs stop before their second evaluation).
    """
    runs = _runs_with_metrics(table)
    use_eval = all(len(_series(metrics_of(run), "loss/eval")[0]) >= 3 for run in runs)
    key = "loss/eval" if use_eval else "loss/train"

    figure, axes = _panels(max(len(table.lrs), 1))
    firsts = []
    for column, lr in enumerate(table.lrs):
        ax = axes[0][column]
        firsts += _plot_panel_curves(ax, table, lr, key, metrics_of)
        ax.set_title(f"lr {format_lr(lr)}")
        ax.set_xlabel("step")
    if firsts:
        for ax in axes[0]:
            ax.set_ylim(top=max(firsts) * 1.05)  # keep exploding losses from flattening the rest
    axes[0][0].set_ylabel(key + ("" if use_eval else " (EMA)"))
    _legend(figure)

    caption = (
        f"Loss curves ({key}{'' if use_eval else ', exponential moving average 0.9'}), "
        "one panel per learning rate, one line per seed; x marks a diverged run's last step."
    )
    return figure, caption


def plot_lr_sensitivity(table: StudyTable) -> tuple[Figure, str]:
    """Final loss against learning rate, one line per configuration, divergence marked."""
    figure, axes = _panels(1)
    ax = axes[0][0]
    for row in table.rows:
        lrs, means, stds, diverged_lrs = [], [], [], []
        for lr in table.lrs:
            cell = table.cell(row, lr)
            if cell is None:
                continue
            if cell.mean is not None:
                lrs.append(lr)
                means.append(cell.mean)
                stds.append(cell.std or 0.0)
            if cell.n_diverged:
                diverged_lrs.append(lr)
        style = _style(row)
        if lrs:
            ax.errorbar(lrs, means, yerr=stds, marker="o", markersize=3, capsize=2, **style)
            style.pop("label")
        # Diverged settings have no final loss: mark them at the top edge of the axes.
        ax.plot(
            diverged_lrs,
            [0.97] * len(diverged_lrs),
            marker="x",
            linestyle="none",
            color=style["color"],
            transform=ax.get_xaxis_transform(),
            clip_on=False,
        )
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("final held-out loss")
    _legend(figure)
    caption = (
        "Final held-out loss against learning rate (mean ± std over seeds); x at the top marks "
        "a setting in which at least one seed diverged."
    )
    return figure, caption


def plot_drift(table: StudyTable, metrics_of: _MetricsCache) -> tuple[Figure, str] | None:
    """Orthogonality error of SVD factors and identity distance of IIW factors over training."""
    panels = (
        ("SVD forms: orthogonality error", ("SvecVD", "SmatVD"), ORTH_KEYS),
        ("IIW forms: distance from identity", ("IvecIW", "ImatIW"), IDENTITY_KEYS),
    )
    figure, axes = _panels(max(len(table.lrs), 1), rows=len(panels))
    plotted = False
    for column, lr in enumerate(table.lrs):
        for panel, (title, parameterizations, keys) in enumerate(panels):
            ax = axes[panel][column]
            for row in [row for row in table.rows if row[0] in parameterizations]:
                cell = table.cell(row, lr)
                runs = [] if cell is None else sorted(cell.runs, key=lambda run: run.seed)
                runs = [run for run in runs if run.status != "missing"][:1]  # lowest seed only
                for run in runs:
                    for key in keys:
                        steps, values = _series(metrics_of(run), key)
                        if not steps:
                            continue
                        style = _style(row)
                        if key.endswith("_V"):
                            style.update(label=None, alpha=0.5)
                        ax.plot(steps, values, linewidth=1, marker=".", markersize=3, **style)
                        plotted = True
            ax.set_title(f"{title}\nlr {format_lr(lr)}", fontsize="small")
            ax.set_yscale("symlog", linthresh=1e-6)
            ax.set_xlabel("step")
    if not plotted:
        plt.close(figure)
        return None
    _legend(figure)
    caption = (
        "Drift of the factors over training, lowest seed of each setting: top, the "
        "orthogonality error of U (solid) and V (faded); bottom, the distance of the IIW "
        "factors from identity."
    )
    return figure, caption


def save_figures(table: StudyTable, out_dir: Path, prefix: str) -> list[tuple[Path, str]]:
    """Write the table's figures as PNG files; return (path, caption) pairs."""
    metrics_of = _MetricsCache()
    figures = [
        ("loss_curves", plot_loss_curves(table, metrics_of)),
        ("lr_sensitivity", plot_lr_sensitivity(table)),
        ("drift", plot_drift(table, metrics_of)),
    ]
    written = []
    for name, result in figures:
        if result is None:
            continue
        figure, caption = result
        path = out_dir / f"{prefix}_{name}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append((path, caption))
    return written

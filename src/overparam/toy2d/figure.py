"""The figure of the 2x2 experiment: prediction paths (top) and mean loss curves (bottom)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on clusters or in CI

import matplotlib.pyplot as plt  # noqa: E402 - must follow the backend choice

from overparam.toy2d.config import MODELS  # noqa: E402

# Panel columns: vector-S models on the left, matrix-S models on the right, dense in both.
PANELS = (
    ("vector S", [spec for spec in MODELS if spec.is_dense or not spec.is_matrix_s]),
    ("matrix S", [spec for spec in MODELS if spec.is_dense or spec.is_matrix_s]),
)
COLORS = {"dense": "black", "svd": "tab:blue", "iiw": "tab:orange"}


def _style(spec: Any) -> dict[str, Any]:
    if spec.is_dense:
        family = "dense"
    elif spec.is_svd:
        family = "svd"
    else:
        family = "iiw"
    dashed = not spec.is_dense and not spec.reproject
    return {"color": COLORS[family], "linestyle": "--" if dashed else "-", "label": spec.label}


def _finite(values: list[float | None]) -> list[float]:
    """JSON nulls (diverged runs) become NaN, which matplotlib leaves out."""
    return [math.nan if value is None else value for value in values]


def plot_results(results: dict[str, Any], path: Path) -> None:
    """Write the figure of a results dict (as in results.json) to ``path`` (PNG)."""
    models = results["models"]
    sample = results["sample"]
    settings = results["settings"]
    figure, axes = plt.subplots(2, 2, figsize=(12, 10))

    for column, (title, specs) in enumerate(PANELS):
        # Top: the prediction W x of one input of the sample run, from W0 x to y.
        paths = axes[0, column]
        for spec in specs:
            points = models[spec.key]["trajectory"]
            xs = _finite([point[0] for point in points])
            ys = _finite([point[1] for point in points])
            paths.plot(xs, ys, linewidth=1.2, **_style(spec))
        paths.plot(*sample["start"], "o", color="gray", label="start W0 x")
        paths.plot(*sample["target"], "*", color="red", markersize=12, label="target y = W* x")
        paths.set_title(f"{title}: prediction path (run {sample['run']}, input {sample['input']})")
        paths.set_xlabel("output 1")
        paths.set_ylabel("output 2")
        paths.set_aspect("equal", adjustable="datalim")
        paths.legend(fontsize=8)

        # Bottom: mean loss over the runs per step, log scale.
        losses = axes[1, column]
        for spec in specs:
            losses.plot(_finite(models[spec.key]["loss_mean"]), linewidth=1.2, **_style(spec))
        losses.axhline(results["loss_floor"], color="gray", linestyle=":", label="eps² · mean(y²)")
        losses.set_yscale("log")
        losses.set_title(f"{title}: mean MSE over {settings['runs']} runs")
        losses.set_xlabel("step")
        losses.set_ylabel("MSE")
        losses.legend(fontsize=8)

    figure.suptitle(
        f"2x2 gradient descent, lr={settings['lr']:g}, seed={settings['seed']}, float64"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)

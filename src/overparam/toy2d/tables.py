"""results.md of the 2x2 experiment, rendered from the results dict alone."""

from __future__ import annotations

from typing import Any

from overparam.toy2d.config import MODELS_BY_KEY
from overparam.toy2d.metrics import LOSS_THRESHOLDS, threshold_key


def format_steps(steps_per_run: list[int | None]) -> str:
    """Mean steps over runs, or which share of runs never reached the loss."""
    missed = sum(step is None for step in steps_per_run)
    if missed:
        return f"not reached in {missed} of {len(steps_per_run)} runs"
    return f"{sum(steps_per_run) / len(steps_per_run):.1f}"


def _format_float(value: float | None, spec: str) -> str:
    return "diverged" if value is None else format(value, spec)


def render_model_table(models: dict[str, Any]) -> list[str]:
    header = ["model", "parameters"]
    header += [f"steps to {threshold_key(t)}" for t in LOSS_THRESHOLDS]
    header += ["final loss (mean)", "curvature (mean)", "diverged runs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model in models.values():
        row = [model["label"], str(model["parameter_count"])]
        row += [format_steps(model["steps_to_loss"][threshold_key(t)]) for t in LOSS_THRESHOLDS]
        row += [
            _format_float(model["loss_mean"][-1], ".3e"),
            _format_float(model["curvature_mean"], ".6f"),
            str(model["runs_diverged"]),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def render_claims(claims: list[dict[str, Any]]) -> list[str]:
    lines = ["| claim | verdict |", "|---|---|"]
    lines += [f"| {claim['statement']} | **{claim['verdict']}** |" for claim in claims]
    for number, claim in enumerate(claims, start=1):
        lines += [
            "",
            f"### {number}. {claim['statement']} ({claim['verdict']})",
            "",
            f"- Measure: {claim['measure']}",
            f"- Evidence: {claim['evidence']}",
        ]
    return lines


def render_lr_grid(grid: list[dict[str, Any]], claims: list[dict[str, Any]]) -> list[str]:
    claim_ids = [claim["claim_id"] for claim in claims]
    header = ["lr", "speed ranking (fastest first)", "diverged runs", *claim_ids]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in grid:
        ranking = " > ".join(MODELS_BY_KEY[key].label for key in entry["ranking"])
        diverged = sum(entry["runs_diverged"].values())
        row = [f"{entry['lr']:g}", ranking, str(diverged)]
        row += [entry["verdicts"][claim_id] for claim_id in claim_ids]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def render_markdown(results: dict[str, Any]) -> str:
    """Render results.md: settings, model table, speed ranking, claims and the lr grid."""
    settings = results["settings"]
    lines = [
        "# 2x2 experiment: results",
        "",
        f"Settings: runs={settings['runs']}, steps={settings['steps']}, lr={settings['lr']:g}, "
        f"seed={settings['seed']}, samples={settings['samples']}, "
        f"weight_std={settings['weight_std']:g}, {settings['dtype']}. "
        f"Loss: {results['definitions']['loss']}",
        "",
        "## Models",
        "",
        *render_model_table(results["models"]),
        "",
        f"Curvature: {results['definitions']['curvature']}",
        "",
        "## Speed ranking",
        "",
        results["definitions"]["speed"],
        "",
    ]
    for place, key in enumerate(results["ranking"], start=1):
        model = results["models"][key]
        lines.append(f"{place}. {model['label']}: {model['speed_steps']:.1f} steps")
    lines += ["", "## Claim check", "", *render_claims(results["claims"])]
    if results["lr_grid"]:
        lines += [
            "",
            "## Learning-rate grid",
            "",
            "The experiment rerun at each learning rate with the same seed and draws.",
            "",
            *render_lr_grid(results["lr_grid"], results["claims"]),
        ]
    return "\n".join(lines) + "\n"

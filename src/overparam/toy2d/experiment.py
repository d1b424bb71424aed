"""Run the 2x2 experiment end to end and write results.json, results.md and the figure."""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from overparam.errors import ConfigError
from overparam.toy2d.claims import SPEED_DEFINITION, check_claims, rank_by_speed, verdicts
from overparam.toy2d.config import IN_FEATURES, MODELS, OUT_FEATURES, Toy2dConfig
from overparam.toy2d.figure import plot_results
from overparam.toy2d.metrics import (
    SAMPLE_INPUT,
    SAMPLE_RUN,
    ModelSummary,
    float64_loss_floor,
    summarize_model,
)
from overparam.toy2d.tables import render_markdown
from overparam.toy2d.training import DTYPE, Problem, draw_problem, train_model

log = logging.getLogger(__name__)

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
FIGURE_PNG = "figure.png"
# Wall time lives outside results.json, so that the same seed gives a byte-identical file.
TIMING_JSON = "timing.json"

DEFINITIONS = {
    "loss": (
        "MSE = mean over the 2 outputs and the inputs of (W x - y)², with y = W* x, "
        "minimized by full-batch gradient descent."
    ),
    "curvature": (
        "path length of the prediction W x over all steps / distance from its first to its "
        "last point, per input, averaged over inputs and runs; 1 means a straight path."
    ),
    "speed": SPEED_DEFINITION,
    "model_keys": (
        "'<name>+reproject': the factors are re-projected after every step with "
        "reproject_factors; '<name>': the factors train freely; 'dense': W itself."
    ),
    "loss_curves": "loss_mean/min/max over runs at steps 0..steps; null where a run diverged.",
    "trajectory": "W x of the sample run and input at steps 0..steps; null after divergence.",
}


def prepare_out_dir(out_dir: Path) -> Path:
    """Create ``out_dir`` if needed and check that a file can be written in it.

    Raises ConfigError (exit code 2) naming --out when it is a file or not writable.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(
            f"invalid --out {str(out_dir)!r}: it exists and is not a directory; "
            "pass a new or existing writable directory."
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        # A real write: permission bits alone miss read-only file systems and root.
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as error:
        raise ConfigError(
            f"invalid --out {str(out_dir)!r}: cannot write there ({error.strerror or error}); "
            "pass a writable directory."
        ) from None
    return out_dir


def train_all_models(config: Toy2dConfig) -> tuple[Problem, dict[str, ModelSummary]]:
    """Draw the problem of ``config`` and train and summarize the nine models on it.

    Runs torch on one thread and restores the previous count afterwards. On tensors of a
    few entries, handing work to other threads costs more than the arithmetic: on 2 busy
    CPU cores the default run took 3.4 to 6 s with 2 threads and 2.6 s with 1.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        problem = draw_problem(config)
        summaries = {}
        for spec in MODELS:
            trace = train_model(spec, problem, config.lr, config.steps)
            summaries[spec.key] = summarize_model(spec, trace)
    finally:
        torch.set_num_threads(threads)
    return problem, summaries


def build_results(config: Toy2dConfig) -> dict[str, Any]:
    """Run the experiment (and its learning-rate grid) and return the results dict.

    The dict is what results.json stores: non-finite floats are None, nothing depends on
    the clock, so the same config gives the same dict.
    """
    problem, summaries = train_all_models(config)
    loss_floor = float64_loss_floor(problem)
    claims = check_claims(summaries, loss_floor, config.steps)

    grid = []
    for lr in config.lr_grid:
        log.info("toy2d: rerunning at lr=%g for the learning-rate grid", lr)
        grid_config = config.with_lr(lr)
        grid_problem, grid_summaries = train_all_models(grid_config)
        grid_claims = check_claims(
            grid_summaries, float64_loss_floor(grid_problem), grid_config.steps
        )
        grid.append(
            {
                "lr": lr,
                "ranking": rank_by_speed(grid_summaries),
                "speed_steps": {k: s.speed_steps for k, s in grid_summaries.items()},
                "runs_diverged": {k: s.runs_diverged for k, s in grid_summaries.items()},
                "verdicts": verdicts(grid_claims),
            }
        )

    sample_input = problem.inputs[SAMPLE_RUN, :, SAMPLE_INPUT]
    results = {
        "experiment": "toy2d",
        "settings": {
            **config.to_dict(),
            "dtype": str(DTYPE).removeprefix("torch."),
            "out_features": OUT_FEATURES,
            "in_features": IN_FEATURES,
        },
        "definitions": DEFINITIONS,
        "loss_floor": loss_floor,
        "sample": {
            "run": SAMPLE_RUN,
            "input": SAMPLE_INPUT,
            "x": sample_input.tolist(),
            "start": (problem.initial_weight[SAMPLE_RUN] @ sample_input).tolist(),
            "target": (problem.target_weight[SAMPLE_RUN] @ sample_input).tolist(),
        },
        "models": {key: summary.to_dict() for key, summary in summaries.items()},
        "ranking": rank_by_speed(summaries),
        "claims": [claim.to_dict() for claim in claims],
        "lr_grid": grid,
    }
    return _finite_or_none(results)


def run_experiment(config: Toy2dConfig, out_dir: Path) -> dict[str, Any]:
    """Run the 2x2 experiment and write results.json, results.md, figure.png, timing.json.

    Returns the results dict stored in results.json. Raises ConfigError before any work
    when ``out_dir`` cannot be written.
    """
    out_dir = prepare_out_dir(out_dir)
    log.info(
        "toy2d: %d runs x %d steps at lr=%g, seed %d",
        config.runs,
        config.steps,
        config.lr,
        config.seed,
    )
    start = time.perf_counter()
    results = build_results(config)
    train_seconds = time.perf_counter() - start

    (out_dir / RESULTS_JSON).write_text(json.dumps(results, indent=1, allow_nan=False) + "\n")
    (out_dir / RESULTS_MD).write_text(render_markdown(results))
    plot_results(results, out_dir / FIGURE_PNG)
    total_seconds = time.perf_counter() - start
    timing = {"time/train(s)": round(train_seconds, 3), "time/total(s)": round(total_seconds, 3)}
    (out_dir / TIMING_JSON).write_text(json.dumps(timing, indent=1) + "\n")

    for claim in results["claims"]:
        log.info("toy2d: %s: %s", claim["claim_id"], claim["verdict"])
    log.info("toy2d: wrote %s in %.1f s", out_dir, total_seconds)
    return results


def _finite_or_none(value: Any) -> Any:
    """Copy of a JSON-like value with NaN and inf replaced by None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    return value

"""`overparam reproduce`: the whole study in one command, at a scale the machine allows.

Steps, each skipped when a previous invocation on the same --out finished it:

1. the toy 2x2 experiment                      -> OUT/toy2d/
2. the from-scratch sweep                      -> OUT/scratch/
3. export of the best dense run as the pretrained checkpoint (cpu and smoke scales)
                                               -> OUT/pretrained/
4. the fine-tuning sweep from that checkpoint  -> OUT/finetune/
5. the report of all runs                      -> OUT/report/
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from overparam.errors import EXIT_FAILED, EXIT_OK, ConfigError, OverparamError, RunInterrupted
from overparam.report import Report, build_report
from overparam.sweep.config import SweepConfig
from overparam.sweep.runner import SweepResult, run_sweep
from overparam.sweep.scales import PRETRAINED_PLACEHOLDER, SCALES, Scale, get_scale
from overparam.sweep.state import check_writable, write_atomic

log = logging.getLogger(__name__)

EXPORT_RECORD = "export.json"  # in OUT/pretrained/: which run was exported, written last


def _fill_placeholder(value: Any, pretrained: str) -> Any:
    if isinstance(value, dict):
        return {key: _fill_placeholder(child, pretrained) for key, child in value.items()}
    return pretrained if value == PRETRAINED_PLACEHOLDER else value


def run_toy(scale: Scale, out_dir: Path) -> None:
    if (out_dir / "results.json").is_file():
        log.info("toy experiment already done: %s", out_dir)
        return
    from overparam.toy2d import Toy2dConfig, run_experiment

    run_experiment(Toy2dConfig(**scale.toy), out_dir)


def best_dense_run(sweep_dir: Path) -> tuple[Path, float]:
    """Return the run to export: the best seed of the dense setting with the lowest mean loss."""
    from overparam.report.cells import aggregate
    from overparam.report.runs import load_runs

    cells = aggregate(
        [run for run in load_runs(sweep_dir) if run.setting.parameterization == "dense"]
    )
    clean = [cell for cell in cells.values() if cell.clean]
    if not clean:
        raise OverparamError(
            f"no dense setting of {sweep_dir} completed all its seeds, so there is no "
            "pretrained model to fine-tune; see the report for what failed"
        )
    best_cell = min(clean, key=lambda cell: cell.mean)
    best_run = min(
        (run for run in best_cell.runs if run.loss is not None), key=lambda run: run.loss
    )
    return best_run.path, best_run.loss


def export_best_dense(scratch_dir: Path, pretrained_dir: Path) -> None:
    """Export the best dense run with the harness's export_pretrained, once."""
    record_path = pretrained_dir / EXPORT_RECORD
    if record_path.is_file():
        log.info("pretrained model already exported: %s", pretrained_dir)
        return
    from overparam.llm.model import export_pretrained

    run_dir, loss = best_dense_run(scratch_dir)
    if pretrained_dir.exists():  # an export that was cut off: start it again
        shutil.rmtree(pretrained_dir)
    log.info("exporting %s (final held-out loss %.4f) to %s", run_dir, loss, pretrained_dir)
    export_pretrained(run_dir, pretrained_dir)
    record = {"run_dir": str(run_dir), "final_eval_loss": loss}
    write_atomic(record_path, json.dumps(record, indent=1) + "\n")


def finetune_config(scale: Scale, pretrained: str) -> SweepConfig:
    return replace(scale.finetune, base=_fill_placeholder(scale.finetune.base, pretrained))


def _check_sweep(name: str, result: SweepResult) -> None:
    if result.interrupted:
        raise RunInterrupted(f"{name} sweep interrupted; rerun the same command to resume")
    failed = result.count("failed")
    if failed:
        log.warning("%d runs of the %s sweep failed; the report lists them", failed, name)


def reproduce(scale: Scale, out_dir: Path, workers: int | None = None) -> Report:
    """Run every step of the study into out_dir and return the report."""
    out_dir = Path(out_dir).resolve()
    check_writable(out_dir)
    log.info("reproduce, scale %s: %s", scale.name, scale.description)

    run_toy(scale, out_dir / "toy2d")

    scratch = run_sweep(scale.scratch, out_dir / "scratch", workers=workers)
    _check_sweep("from-scratch", scratch)

    try:
        pretrained = PRETRAINED_PLACEHOLDER
        if PRETRAINED_PLACEHOLDER in json.dumps(scale.finetune.base):
            export_best_dense(out_dir / "scratch", out_dir / "pretrained")
            pretrained = str(out_dir / "pretrained")
        finetune_dir = out_dir / "finetune"
        finetune = run_sweep(finetune_config(scale, pretrained), finetune_dir, workers=workers)
        _check_sweep("fine-tuning", finetune)
    except RunInterrupted:
        raise
    except OverparamError as error:
        # The from-scratch results stand on their own: report them before giving up.
        log.error("fine-tuning step failed: %s; writing the report of the runs so far", error)
        _write_report(out_dir)
        raise
    return _write_report(out_dir)


def _write_report(out_dir: Path) -> Report:
    report = build_report(out_dir, out_dir / "report", toy_dir=out_dir / "toy2d")
    log.info("report: %s and %s", report.markdown_path, report.html_path)
    return report


def _scales_help() -> str:
    lines = ["scales:"]
    for scale in SCALES.values():
        lines += [f"  {line}" for line in scale.summary_lines()]
        lines += [f"    note: {note}" for note in scale.notes]
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "reproduce",
        help="rerun the whole study (toy, from-scratch and fine-tuning sweeps, report)",
        description=(
            "Run the toy experiment, the from-scratch sweep, the fine-tuning sweep and the "
            "report. Rerunning on the same --out resumes and skips finished work."
        ),
        epilog=_scales_help(),
    )
    parser.add_argument(
        "--scale", choices=list(SCALES), default="cpu", help="size of the study (default: cpu)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: runs/reproduce-SCALE)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local training runs at a time (default: one per CPU core)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    scale = get_scale(args.scale)
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"invalid --workers {args.workers}; expected an integer >= 1.")
    if not scale.runnable_here:
        log.info("scale %s submits its runs to Slurm through submitit", scale.name)
    out_dir = args.out if args.out is not None else Path("runs") / f"reproduce-{scale.name}"
    report = reproduce(scale, out_dir, workers=args.workers)
    failed = sum(run.status == "failed" for run in report.runs)
    if failed:
        log.error("%d runs failed; see the report's 'Runs without a result'", failed)
        return EXIT_FAILED
    return EXIT_OK

"""`overparam sweep --config FILE`: run a grid of training runs, resumably and in parallel."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from overparam.errors import EXIT_FAILED, EXIT_OK, ConfigError, RunInterrupted
from overparam.sweep.config import EXECUTORS, SweepConfig
from overparam.sweep.runner import run_sweep

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "sweep",
        help="run a grid of training runs (parameterization x re-projection x lr x seed)",
        description=(
            "Run every cell of a sweep config (TOML or JSON) as its own `overparam train` "
            "process. Finished runs (completed or diverged) are skipped, killed runs resume "
            "from their last checkpoint, failed runs stay failed unless --retry-failed. "
            "Two sweeps may share a folder: each run is trained by one process at a time."
        ),
    )
    parser.add_argument(
        "--config", type=Path, required=True, help="sweep config file (.toml or .json)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="sweep folder, one run directory per cell (default: runs/sweep-NAME)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local runs at a time (default: launch.workers, or one per CPU core); the cores "
        "are split evenly between them",
    )
    parser.add_argument(
        "--executor",
        choices=EXECUTORS,
        default=None,
        help="local worker processes or a Slurm job array through submitit "
        "(default: launch.executor)",
    )
    parser.add_argument(
        "--retry-failed", action="store_true", help="move failed runs aside and run them again"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    config = SweepConfig.load(args.config)
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"invalid --workers {args.workers}; expected an integer >= 1.")
    out_dir = args.out if args.out is not None else Path("runs") / f"sweep-{config.name}"
    result = run_sweep(
        config,
        out_dir,
        workers=args.workers,
        executor=args.executor,
        retry_failed=args.retry_failed,
    )
    if result.interrupted:
        raise RunInterrupted(
            f"sweep interrupted; rerun the same command to resume the unfinished runs in {out_dir}"
        )
    taken = result.count("taken")
    if taken:
        log.warning(
            "%d runs were being trained by another process; rerun this sweep later to "
            "resume any that it did not finish",
            taken,
        )
    failed = [path for path, outcome in result.outcomes.items() if outcome == "failed"]
    if failed:
        log.error(
            "%d of %d runs failed, e.g. %s; their logs are in %s",
            len(failed),
            len(result.outcomes),
            failed[0],
            Path(out_dir) / "_sweep" / "logs",
        )
        return EXIT_FAILED
    return EXIT_OK

"""`overparam toy2d`: the 2x2 experiment from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from overparam.toy2d.config import Toy2dConfig, parse_lr_grid

DEFAULTS = Toy2dConfig()
DEFAULT_OUT = Path("runs/toy2d")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "toy2d",
        help="learn a 2x2 matrix with the nine models and check the study's observations",
        description=(
            "Learn a 2x2 matrix W by full-batch gradient descent on MSE (float64) as dense, "
            "and as SvecVD, IvecIW, SmatVD and ImatIW, each re-projected after every step "
            "and free. Writes figure.png, results.json, results.md (tables and claim "
            "check) and timing.json into --out."
        ),
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=DEFAULTS.runs,
        help=f"independent draws of W0, W* and x, averaged (default {DEFAULTS.runs})",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=DEFAULTS.steps,
        help=f"gradient-descent steps per model (default {DEFAULTS.steps})",
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=DEFAULTS.lr,
        help=f"learning rate of all models (default {DEFAULTS.lr:g})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULTS.seed,
        help=f"seed of the draws of W0, W* and x (default {DEFAULTS.seed})",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=DEFAULTS.samples,
        help=f"inputs x per run, each on the unit circle (default {DEFAULTS.samples})",
    )
    parser.add_argument(
        "--weight-std",
        type=float,
        default=DEFAULTS.weight_std,
        help=f"standard deviation of the entries of W0 and W* (default {DEFAULTS.weight_std:g})",
    )
    parser.add_argument(
        "--lr-grid",
        default=None,
        metavar="A,B,C",
        help="also rerun at each of these learning rates and tabulate ordering and verdicts",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"output directory, created if missing (default {DEFAULT_OUT})",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    config = Toy2dConfig(
        runs=args.runs,
        steps=args.steps,
        lr=args.lr,
        seed=args.seed,
        samples=args.samples,
        weight_std=args.weight_std,
        lr_grid=parse_lr_grid(args.lr_grid) if args.lr_grid is not None else (),
    )
    from overparam.toy2d.experiment import run_experiment  # loads matplotlib

    run_experiment(config, args.out)
    return 0

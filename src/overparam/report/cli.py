"""`overparam report RUNS_DIR`: tables, figures and the claim check of finished runs."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from overparam.report.build import build_report

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "report",
        help="write report.md, report.html, CSV files and figures from run directories",
        description=(
            "Read every run directory under RUNS_DIR (identity from each run's config.json, "
            "outcome from summary.json) and write Table 1 (from scratch), Table 2 (fine-tuning), "
            "figures and the claim check as report.md, report.html (figures embedded) and CSV."
        ),
    )
    parser.add_argument("runs_dir", type=Path, metavar="RUNS_DIR", help="folder of run directories")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: RUNS_DIR/report)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    report = build_report(args.runs_dir, args.out)
    log.info("HTML page: %s", report.html_path)
    for claim in report.claims:
        log.info("claim %-24s %s", claim.key, claim.verdict)
    return 0

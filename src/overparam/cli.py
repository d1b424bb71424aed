"""The `overparam` command: parse the subcommand, hand it its arguments, map errors to exit codes.

Each subcommand lives in its own module, which provides `add_parser(subparsers)` and
`run(args) -> int`. This file holds no experiment logic.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from overparam.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_USAGE,
    OverparamError,
)

# Subcommand name -> (module that implements it, one-line summary for the top-level help).
# Only the module of the command being run is imported: the LLM modules pull in transformers,
# which costs seconds that `overparam toy2d` or `overparam --help` should not pay.
SUBCOMMANDS = {
    "toy2d": ("overparam.toy2d.cli", "the 2x2 experiment: figure, table and claim check"),
    "train": ("overparam.llm.cli", "train one Llama-3 model, dense or decomposed"),
    "sweep": ("overparam.sweep.cli", "run a resumable grid of training runs"),
    "report": ("overparam.report.cli", "tables, figures and claim check from run directories"),
    "reproduce": ("overparam.reproduce", "the whole study at one scale: toy, sweeps, report"),
}

EXIT_CODES_HELP = f"""exit codes:
  {EXIT_OK}  finished (a run that diverged is a result and also exits {EXIT_OK})
  {EXIT_FAILED}  failed at run time (rerun with --debug for the traceback)
  {EXIT_USAGE}  invalid option, configuration or input data; nothing was started
  {EXIT_INTERRUPTED}  interrupted by SIGTERM/SIGINT after saving a checkpoint; rerun with --resume
  {EXIT_LOCKED}  the run directory is locked by another process
"""

log = logging.getLogger("overparam")


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that exits with EXIT_USAGE and shows the exit codes in every --help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Build the parser; only ``command``'s module is imported, the others get a stub."""
    parser = _ArgumentParser(
        prog="overparam",
        description="Decomposed linear layers (U·S·Vᵀ) and the experiments of the study.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback when a command fails"
    )
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=_ArgumentParser
    )
    subparsers.required = True
    for name, (module_name, summary) in SUBCOMMANDS.items():
        if name != command:
            subparsers.add_parser(name, help=summary)
            continue
        module = importlib.import_module(module_name)
        sub = module.add_parser(subparsers)
        sub.epilog = EXIT_CODES_HELP if sub.epilog is None else f"{sub.epilog}\n\n{EXIT_CODES_HELP}"
        sub.formatter_class = argparse.RawDescriptionHelpFormatter
        # Also accept --debug after the subcommand. SUPPRESS keeps the top-level value
        # when the flag is absent here, because argparse copies subparser defaults over it.
        sub.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show the full traceback when the command fails",
        )
        sub.set_defaults(_run=module.run, _parser=sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    command = next((arg for arg in argv if arg in SUBCOMMANDS), None)
    parser = build_parser(command)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # Let the subcommand's parser report it, so the usage line and the hint name it.
        subparser = getattr(args, "_parser", parser)
        subparser.error(
            f"unrecognized arguments: {' '.join(unknown)} (see '{subparser.prog} --help')"
        )
    debug = bool(args.debug)
    try:
        return int(args._run(args) or EXIT_OK)
    except OverparamError as error:
        if debug:
            log.exception("%s", error)
        else:
            log.error("%s", error)
        return error.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - the last line of defence of the CLI
        if debug:
            log.exception("unexpected error")
        else:
            log.error("%s: %s (rerun with --debug for the traceback)", type(error).__name__, error)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())

"""`overparam train`: one Llama-3 training run from a config file and command-line overrides.

Every config field has a flag `--SECTION.FIELD VALUE`, generated from the dataclasses, and
`--set SECTION.FIELD=VALUE` does the same. The common ones also have short flags (--lr,
--max-steps, ...). Precedence, lowest first: defaults (or the run's own config.json when
resuming without --config), --config, short flags, --SECTION.FIELD flags, --set.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from overparam.errors import EXIT_OK, ConfigError
from overparam.llm.config import SECTIONS, RunConfig
from overparam.llm.config_parsing import field_help, field_types, type_name
from overparam.llm.rundir import CONFIG_FILE

log = logging.getLogger("overparam.llm.cli")

# Short flag -> (config key, metavar, help).
SHORT_FLAGS: dict[str, tuple[str, str, str]] = {
    "--preset": ("model.preset", "NAME", "model preset (llama3-tiny, llama3-small, llama3.2-1b)"),
    "--parameterization": (
        "decomposition.parameterization",
        "NAME",
        "dense, SvecVD, IvecIW, SmatVD or ImatIW (lower case accepted)",
    ),
    "--reproject-every": (
        "decomposition.reproject_every_steps",
        "N",
        "re-project the factors every N optimizer steps (0: never)",
    ),
    "--lr": ("optim.lr", "X", "peak learning rate"),
    "--max-steps": ("train.max_steps", "N", "optimizer steps of the run"),
    "--data": ("data.source", "SPEC", "corpus: stdlib, stdlib-docs, a file, directory or glob"),
    "--seed": ("train.seed", "N", "seed of the initial weights and of the batch order"),
}

DEFAULT_OUT_ROOT = Path("runs") / "train"

_METAVARS: dict[Any, str] = {int: "N", float: "X", bool: "BOOL"}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `train` subcommand to the `overparam` parser and return it."""
    parser = subparsers.add_parser(
        "train",
        help="train one Llama-3 model with decomposed layers",
        description=__doc__.split("\n\n")[0]
        + "\n\nEvery option below can also be set in the --config file, under the section "
        "of the same name (e.g. [optim] lr = 3e-3).",
    )
    parser.add_argument("--config", metavar="FILE", help="a .toml or .json run configuration")
    parser.add_argument(
        "--out",
        metavar="DIR",
        help=f"run directory (default: {DEFAULT_OUT_ROOT}/PRESET-PARAMETERIZATION-seedSEED)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its newest valid checkpoint",
    )
    for flag, (key, metavar, help_text) in SHORT_FLAGS.items():
        parser.add_argument(
            flag, dest=f"short:{key}", metavar=metavar, default=argparse.SUPPRESS, help=help_text
        )
    parser.add_argument(
        "--tensorboard",
        dest="short:train.tensorboard",
        action="store_const",
        const="true",
        default=argparse.SUPPRESS,
        help="also write metrics to TensorBoard (needs the tensorboard package)",
    )
    parser.add_argument(
        "--trust-remote-code",
        dest="short:model.trust_remote_code",
        action="store_const",
        const="true",
        default=argparse.SUPPRESS,
        help="allow model.init_from to run code shipped with the checkpoint",
    )
    parser.add_argument(
        "--set",
        dest="set_values",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="set any config field, e.g. --set optim.lr=1e-3 (repeatable)",
    )
    _add_field_flags(parser)
    return parser


def _add_field_flags(parser: argparse.ArgumentParser) -> None:
    """Add one --SECTION.FIELD flag per config field, with its help, type and default."""
    defaults = RunConfig()
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(f"[{section}] options")
        section_defaults = getattr(defaults, section)
        for name, annotation in field_types(cls).items():
            default = getattr(section_defaults, name)
            if isinstance(default, tuple):
                default = ",".join(str(v) for v in default)
            help_text = field_help(cls, name) or name.replace("_", " ")
            group.add_argument(
                f"--{section}.{name}",
                dest=f"field:{section}.{name}",
                metavar=_METAVARS.get(annotation, "VALUE"),
                default=argparse.SUPPRESS,
                help=f"{help_text} [{type_name(annotation)}; default: {default}]",
            )


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    """Collect the dotted-key overrides of the command line in precedence order."""
    overrides: dict[str, str] = {}
    values = vars(args)
    for prefix in ("short:", "field:"):
        for dest, value in values.items():
            if dest.startswith(prefix):
                overrides[dest[len(prefix) :]] = value
    for item in args.set_values:
        key, separator, value = item.partition("=")
        if not separator or not key.strip():
            raise ConfigError(f"invalid --set {item!r}; expected KEY=VALUE, e.g. optim.lr=1e-3")
        overrides[key.strip()] = value.strip()
    return overrides


def build_config(args: argparse.Namespace) -> tuple[RunConfig, Path]:
    """Return the run's config and directory from the parsed command line."""
    overrides = _overrides(args)
    out = Path(args.out) if args.out else None
    if args.config:
        base = RunConfig.load(args.config)
    elif args.resume and out is not None and (out / CONFIG_FILE).is_file():
        base = RunConfig.load(out / CONFIG_FILE)
    else:
        base = RunConfig()
    config = base.with_overrides(overrides)
    if out is None:
        name = (
            f"{config.model.preset}-{config.decomposition.parameterization}-seed{config.train.seed}"
        )
        out = DEFAULT_OUT_ROOT / name
    return config, out


def run(args: argparse.Namespace) -> int:
    """Run `overparam train`; errors propagate to the CLI, which maps them to exit codes."""
    from overparam.llm.train import run_training  # imports torch and transformers

    logging.captureWarnings(True)
    config, out = build_config(args)
    summary = run_training(config, out, resume=args.resume)
    status = summary.get("status")
    if status == "diverged":
        log.warning(
            "run diverged at step %s: %s (exit code %d: a diverged run is a result)",
            summary.get("diverged_step"),
            summary.get("reason"),
            EXIT_OK,
        )
    return EXIT_OK

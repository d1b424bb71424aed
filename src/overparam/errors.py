"""Typed exceptions of the library and the exit codes the CLI maps them to."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

# Exit codes of every `overparam` command (also listed in `overparam --help`).
EXIT_OK = 0  # finished; a run that diverged is a result and also exits 0
EXIT_FAILED = 1  # the run or command failed at run time (see the message or --debug)
EXIT_USAGE = 2  # invalid configuration, option or input data: nothing was started
EXIT_INTERRUPTED = 3  # stopped by SIGTERM/SIGINT after saving a checkpoint; rerun with --resume
EXIT_LOCKED = 4  # another process holds the run directory's lock


class OverparamError(Exception):
    """Base class of all errors raised by overparam."""

    exit_code = EXIT_FAILED


class ConfigError(OverparamError, ValueError):
    """An invalid configuration value, option or parameterization name."""

    exit_code = EXIT_USAGE


class DataError(OverparamError, ValueError):
    """A corpus or tokenizer that cannot be used: missing, empty, undecodable or too small."""

    exit_code = EXIT_USAGE


class TargetNotFoundError(ConfigError, LookupError):
    """A target-module pattern matched no `nn.Linear` of the model."""


class DecompositionError(OverparamError):
    """A layer's effective weight cannot be decomposed; the message names the layer."""

    def __init__(self, layer_name: str, message: str) -> None:
        self.layer_name = layer_name
        super().__init__(message)


class NonFiniteWeightError(DecompositionError, FloatingPointError):
    """A layer's effective weight contains NaN or Inf, so it cannot be decomposed."""

    def __init__(self, layer_name: str, detail: str = "") -> None:
        message = f"non-finite effective weight in layer '{layer_name}'"
        super().__init__(layer_name, f"{message}: {detail}" if detail else message)


class SVDConvergenceError(DecompositionError):
    """torch.linalg.svd did not converge on a finite effective weight."""

    def __init__(self, layer_name: str, detail: str) -> None:
        super().__init__(layer_name, f"the SVD of layer '{layer_name}' did not converge: {detail}")


class CheckpointError(OverparamError):
    """A checkpoint that is missing, truncated or fails validation."""


class RunLockedError(OverparamError):
    """The run directory is locked by another live process."""

    exit_code = EXIT_LOCKED


class RunInterrupted(OverparamError):
    """A run stopped on SIGTERM or SIGINT after saving a checkpoint."""

    exit_code = EXIT_INTERRUPTED


def suggest(value: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean X?' for the closest choice, or '' when nothing is close."""
    matches = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.5)
    if not matches:
        lowered = {choice.lower(): choice for choice in choices}
        matches = difflib.get_close_matches(value.lower(), list(lowered), n=1, cutoff=0.5)
        matches = [lowered[m] for m in matches]
    return f" Did you mean '{matches[0]}'?" if matches else ""

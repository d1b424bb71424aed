"""Settings of the 2x2 experiment and the nine models it compares."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from overparam.errors import ConfigError
from overparam.parameterizations import DECOMPOSED, is_matrix_s, is_svd

# Sizes of the learned matrix W (out x in); the figure plots the 2-D output plane.
OUT_FEATURES = 2
IN_FEATURES = 2


@dataclass(frozen=True)
class Toy2dConfig:
    """Settings of one run of the 2x2 experiment (every run is float64 and full-batch).

    The study gives no learning rate, step count or data size, so these defaults are ours:

    - ``samples=1``: one input x per run. The dense gradient step then moves the prediction
      W·x exactly along the residual W·x − y, so "dense moves in a straight line" is a
      property that a run can confirm or refute. With two or more inputs, dense is straight
      only for whitened inputs.
    - Inputs are drawn on the unit circle. With one input the dense loss then shrinks by
      (1 − lr·|x|²)² = (1 − lr)² per step in every run, and ``lr`` is in units of 1/|x|².
    - ``lr=0.05``: the decomposed models scale the step by roughly 1 + 2·|W·x|² (re-projected
      ImatIW exactly so, to first order in lr), so a run is unstable once
      0.05·(1 + 2·|W·x|²) > 2, i.e. |W·x|² > 19.5. For the default draws |W0·x|² is
      chi-squared with 2 degrees of freedom, so we estimate that this happens in fewer
      than 1e-4 of the runs.
    - ``steps=1000``: with seed 0 at lr=0.05, dense needs about 270 steps to reach a loss
      of 1e-12 and 700 to reach the float64 floor near 1e-30. The mean loss of the fastest
      models reaches the floor by step 600, so the last steps show the plateau.
    - ``runs=10``: ten independent draws, averaged.
    """

    runs: int = 10
    """Independent runs (seeds of W0, W* and x), averaged in the tables and loss curves."""
    steps: int = 1000
    """Gradient-descent steps per model and run."""
    lr: float = 0.05
    """Learning rate of vanilla gradient descent, the same for all nine models."""
    seed: int = 0
    """Seed of the draws of W0, W* and x for all runs."""
    samples: int = 1
    """Inputs x per run (columns of X); the loss is the mean over samples and outputs."""
    weight_std: float = 1.0
    """Standard deviation of the Gaussian entries of W0 and W*."""
    lr_grid: tuple[float, ...] = field(default_factory=tuple)
    """Extra learning rates: the experiment reruns at each one for the ordering table."""

    def __post_init__(self) -> None:
        _require_int("runs", "--runs", self.runs, minimum=1)
        _require_int("steps", "--steps", self.steps, minimum=1)
        _require_int("seed", "--seed", self.seed, minimum=0)
        _require_int("samples", "--samples", self.samples, minimum=1)
        _require_positive("lr", "--lr", self.lr)
        _require_positive("weight_std", "--weight-std", self.weight_std)
        if not isinstance(self.lr_grid, tuple):
            object.__setattr__(self, "lr_grid", tuple(self.lr_grid))
        for lr in self.lr_grid:
            _require_positive("lr_grid", "--lr-grid", lr)

    def to_dict(self) -> dict[str, Any]:
        settings = asdict(self)
        settings["lr_grid"] = list(self.lr_grid)
        return settings

    def with_lr(self, lr: float) -> Toy2dConfig:
        """Copy of this config at another learning rate, without a grid of its own."""
        return Toy2dConfig(**{**asdict(self), "lr": lr, "lr_grid": ()})


def _require_int(name: str, option: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"invalid {name}={value!r} ({option}): expected an integer >= {minimum}.")


def _require_positive(name: str, option: str, value: object) -> None:
    valid = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )
    if not valid:
        raise ConfigError(f"invalid {name}={value!r} ({option}): expected a finite number > 0.")


def parse_lr_grid(text: str) -> tuple[float, ...]:
    """Parse ``--lr-grid a,b,c`` into learning rates; raise ConfigError on a bad entry."""
    rates = []
    for entry in text.split(","):
        try:
            rate = float(entry)
        except ValueError:
            raise ConfigError(
                f"invalid --lr-grid entry {entry.strip()!r} in {text!r}: expected "
                "comma-separated finite numbers > 0, e.g. 0.01,0.05,0.1."
            ) from None
        _require_positive("lr_grid", "--lr-grid", rate)
        rates.append(rate)
    return tuple(rates)


@dataclass(frozen=True)
class ModelSpec:
    """One of the nine compared models: a parameterization, re-projected or free."""

    parameterization: str
    reproject: bool

    @property
    def key(self) -> str:
        """Name in results.json: ``SvecVD+reproject`` or ``SvecVD`` (free), ``dense``."""
        return f"{self.parameterization}+reproject" if self.reproject else self.parameterization

    @property
    def label(self) -> str:
        """Name in tables and figures: ``SvecVD (re-projected)``, ``SvecVD (free)``, ``dense``."""
        if self.parameterization == "dense":
            return "dense"
        return f"{self.parameterization} ({'re-projected' if self.reproject else 'free'})"

    @property
    def is_dense(self) -> bool:
        return self.parameterization == "dense"

    @property
    def is_svd(self) -> bool:
        return not self.is_dense and is_svd(self.parameterization)

    @property
    def is_matrix_s(self) -> bool:
        return not self.is_dense and is_matrix_s(self.parameterization)


MODELS: tuple[ModelSpec, ...] = (ModelSpec("dense", reproject=False),) + tuple(
    ModelSpec(name, reproject) for name in DECOMPOSED for reproject in (True, False)
)
MODELS_BY_KEY = {spec.key: spec for spec in MODELS}

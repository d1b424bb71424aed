"""Configuration of a sweep: the grid, the base run config, and how runs are launched.

A sweep file is TOML (or JSON) with these tables::

    name = "scratch"                     # shown in logs and the manifest
    base_config = "run.toml"             # optional RunConfig file, relative to this file

    [grid]
    parameterizations = ["dense", "SvecVD", "IvecIW", "SmatVD", "ImatIW"]
    reproject_every_steps = [128, 0]     # 0 = free; not applied to dense
    lrs = [1e-4, 1e-3, 1e-2]
    seeds = [0, 1]

    [base.model]                         # RunConfig sections, on top of base_config
    preset = "llama3-tiny"

    [launch]
    executor = "local"                   # or "slurm" (submitit)
    workers = 2
    nproc_per_run = 1                    # > 1 launches each run through torchrun

    [slurm]
    partition = "gpu"
    gpus_per_run = 8
    time_limit_minutes = 240
    cpus_per_task = 32
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from overparam.errors import ConfigError, suggest
from overparam.parameterizations import resolve_parameterization

EXECUTORS = ("local", "slurm")


def _reject_unknown(section: str, values: dict[str, Any], accepted: list[str]) -> None:
    for key in values:
        if key not in accepted:
            raise ConfigError(
                f"unknown key '{key}' in [{section}] of the sweep config; accepted keys: "
                f"{', '.join(accepted)}." + suggest(str(key), accepted)
            )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class GridConfig:
    """The swept values; every combination is one run (dense takes no re-projection period)."""

    parameterizations: list[str] = field(
        default_factory=lambda: ["dense", "SvecVD", "IvecIW", "SmatVD", "ImatIW"]
    )
    reproject_every_steps: list[int] = field(default_factory=lambda: [128, 0])  # 0 = free
    lrs: list[float] = field(default_factory=lambda: [1e-3])
    seeds: list[int] = field(default_factory=lambda: [0])

    def __post_init__(self) -> None:
        try:
            names = [resolve_parameterization(str(p)) for p in self.parameterizations]
        except ConfigError as error:
            raise ConfigError(f"invalid grid.parameterizations: {error}") from None
        self.parameterizations = list(dict.fromkeys(names))
        if not self.parameterizations:
            raise ConfigError("invalid grid.parameterizations = []; expected at least one name.")
        for key, values, valid, accepted in (
            ("reproject_every_steps", self.reproject_every_steps, _valid_period, "integers >= 0"),
            ("lrs", self.lrs, _valid_lr, "finite numbers > 0"),
            ("seeds", self.seeds, _valid_seed, "integers >= 0"),
        ):
            if not isinstance(values, list) or not values or not all(map(valid, values)):
                raise ConfigError(
                    f"invalid grid.{key} = {values!r}; expected a list of {accepted}."
                )
        self.lrs = sorted(set(float(lr) for lr in self.lrs))
        self.seeds = sorted(set(self.seeds))
        self.reproject_every_steps = list(dict.fromkeys(self.reproject_every_steps))


def _valid_period(value: Any) -> bool:
    return _is_int(value) and value >= 0


def _valid_seed(value: Any) -> bool:
    return _is_int(value) and value >= 0


def _valid_lr(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


@dataclass
class LaunchConfig:
    """Launch settings: local worker processes or a Slurm job array, one or N processes per run."""

    executor: str = "local"
    workers: int = 0  # local runs at a time; 0 = one per CPU core
    nproc_per_run: int = 1  # processes per run; > 1 launches the run through torchrun
    gpus_per_worker: int = 0  # local executor: GPUs given to each worker slot (0 = none)

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ConfigError(
                f"invalid launch.executor = {self.executor!r}; expected one of "
                f"{', '.join(EXECUTORS)}." + suggest(str(self.executor), EXECUTORS)
            )
        for key, minimum in (("workers", 0), ("nproc_per_run", 1), ("gpus_per_worker", 0)):
            value = getattr(self, key)
            if not _is_int(value) or value < minimum:
                raise ConfigError(
                    f"invalid launch.{key} = {value!r}; expected an integer >= {minimum}."
                )


@dataclass
class SlurmConfig:
    """Resources of each job of the Slurm array (submitit's AutoExecutor parameters)."""

    partition: str = ""  # empty: the cluster's default partition
    gpus_per_run: int = 0
    cpus_per_task: int = 8
    time_limit_minutes: int = 240
    mem_gb: int = 0  # 0: the partition's default
    array_parallelism: int = 64  # jobs of the array running at once
    account: str = ""

    def __post_init__(self) -> None:
        for key, minimum in (
            ("gpus_per_run", 0),
            ("cpus_per_task", 1),
            ("time_limit_minutes", 1),
            ("mem_gb", 0),
            ("array_parallelism", 1),
        ):
            value = getattr(self, key)
            if not _is_int(value) or value < minimum:
                raise ConfigError(
                    f"invalid slurm.{key} = {value!r}; expected an integer >= {minimum}."
                )
        for key in ("partition", "account"):
            if not isinstance(getattr(self, key), str):
                raise ConfigError(
                    f"invalid slurm.{key} = {getattr(self, key)!r}; expected a string."
                )


@dataclass
class SweepConfig:
    """A whole sweep: name, grid, base RunConfig dict (sections), launch and Slurm settings."""

    name: str = "sweep"
    grid: GridConfig = field(default_factory=GridConfig)
    base: dict[str, Any] = field(default_factory=dict)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"invalid name = {self.name!r}; expected a non-empty string.")
        if not isinstance(self.base, dict):
            raise ConfigError(
                f"invalid base = {self.base!r}; expected a table of RunConfig sections."
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any], base_dir: Path | None = None) -> SweepConfig:
        """Build from parsed TOML/JSON; `base_config` paths are relative to base_dir."""
        values = copy.deepcopy(values)
        _reject_unknown(
            "top level", values, ["name", "base_config", "grid", "base", "launch", "slurm"]
        )
        base = {}
        if "base_config" in values:
            base_path = Path(values.pop("base_config"))
            if not base_path.is_absolute() and base_dir is not None:
                base_path = base_dir / base_path
            base = read_table(base_path)
            base.pop("run", None)  # a run's config.json also contains what that run resolved
        base = deep_merge(base, values.pop("base", {}))

        sections = {}
        for name, cls_ in (("grid", GridConfig), ("launch", LaunchConfig), ("slurm", SlurmConfig)):
            section = values.pop(name, {})
            if not isinstance(section, dict):
                raise ConfigError(f"invalid [{name}] in the sweep config; expected a table.")
            _reject_unknown(name, section, list(cls_.__dataclass_fields__))
            sections[name] = cls_(**section)
        return cls(name=values.get("name", "sweep"), base=base, **sections)

    @classmethod
    def load(cls, path: str | Path) -> SweepConfig:
        path = Path(path)
        return cls.from_dict(read_table(path), path.parent)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "grid": vars(self.grid) | {},
            "base": copy.deepcopy(self.base),
            "launch": vars(self.launch) | {},
            "slurm": vars(self.slurm) | {},
        }


def read_table(path: Path) -> dict[str, Any]:
    """Read a .toml or .json file holding a table; ConfigError names the file on any problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    try:
        if path.suffix == ".json":
            values = json.loads(text)
        elif path.suffix == ".toml":
            values = _load_toml(text, path)
        else:
            raise ConfigError(f"invalid config file {path}: expected a .toml or .json file.")
    except (ValueError, TypeError) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"invalid config file {path}: {error}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"invalid config file {path}: expected a table at the top level.")
    return values


def _load_toml(text: str, path: Path) -> dict[str, Any]:
    try:
        import tomllib  # standard library from Python 3.11 on
    except ModuleNotFoundError:
        raise ConfigError(f"reading {path} needs Python >= 3.11 (tomllib); use .json") from None
    return tomllib.loads(text)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return base with override's values replacing it, table by table."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged

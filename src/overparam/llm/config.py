"""Configuration of one Llama-3 training run: one validated dataclass per concern.

A `RunConfig` has five sections, in TOML as tables of the same names::

    [model]          preset or pretrained checkpoint, context length
    [decomposition]  parameterization, target layers, re-projection
    [data]           corpus and tokenizer (overparam.llm.data.DataConfig)
    [optim]          AdamW and the learning-rate schedule
    [train]          batch shape, run length, evaluation, logging, checkpoints, device

Each section validates itself in `__post_init__`; `RunConfig.__post_init__` adds the checks
that span sections. Checks that need the built model (target patterns, the tokenizer's
vocabulary against a pretrained model's) run in `overparam.llm.train` before the run
directory is created.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from overparam.errors import ConfigError, suggest
from overparam.llm.config_parsing import build_section, convert_value, field_types, section_to_dict
from overparam.llm.data import DataConfig
from overparam.llm.presets import PRESETS, Preset, get_preset
from overparam.parameterizations import resolve_parameterization

TARGET_SHORTCUTS = ("attention", "mlp", "all-linear")
OPTIMIZER_STATES = ("keep", "reset")
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")

# Key under which config.json stores what the run resolved (data fingerprint, versions, world
# size, parameter counts); `RunConfig.load` skips it.
RUN_INFO_KEY = "run"


def _invalid(key: str, value: Any, accepted: str) -> ConfigError:
    return ConfigError(f"invalid {key} = {value!r}; expected {accepted}.")


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(
            f"invalid {key} = {value!r}; expected one of {', '.join(choices)}."
            + suggest(str(value), choices)
        )


def _check_int(key: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _invalid(key, value, f"an integer >= {minimum}")


def _check_float(key: str, value: float, minimum: float, *, inclusive: bool, allow_inf=False):
    number_ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    finite_ok = number_ok and (math.isfinite(value) or (allow_inf and value == math.inf))
    in_range = finite_ok and (value >= minimum if inclusive else value > minimum)
    if not in_range:
        bound = f">= {minimum}" if inclusive else f"> {minimum}"
        raise _invalid(key, value, f"a {'' if allow_inf else 'finite '}number {bound}")


@dataclass
class ModelConfig:
    """The network: a preset built from scratch, or a pretrained checkpoint to fine-tune."""

    SECTION: ClassVar[str] = "model"

    preset: str = field(
        default="llama3-tiny",
        metadata={"help": f"architecture preset, one of {', '.join(PRESETS)}"},
    )
    init_from: str | None = field(
        default=None,
        metadata={
            "help": "local directory or hub id of a pretrained causal LM to fine-tune "
            "(none: train the preset from scratch)"
        },
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "allow init_from to run the model code shipped with the checkpoint"},
    )
    context_length: int | None = field(
        default=None,
        metadata={"help": "sequence length in tokens (none: the preset's default)"},
    )
    attention_implementation: str = field(
        default="sdpa",
        metadata={"help": f"attention kernel, one of {', '.join(ATTENTION_IMPLEMENTATIONS)}"},
    )

    def __post_init__(self) -> None:
        get_preset(self.preset)
        if self.init_from is not None and not str(self.init_from).strip():
            raise _invalid("model.init_from", self.init_from, "a path, a hub id or none")
        if self.context_length is not None:
            _check_int("model.context_length", self.context_length, 1)
        _check_choice(
            "model.attention_implementation",
            self.attention_implementation,
            ATTENTION_IMPLEMENTATIONS,
        )


@dataclass
class DecompositionConfig:
    """Decomposition settings: the layers that become U·S·Vᵀ, their form, and re-projection."""

    SECTION: ClassVar[str] = "decomposition"

    parameterization: str = field(
        default="dense",
        metadata={"help": "dense, SvecVD, IvecIW, SmatVD or ImatIW (lower-case aliases accepted)"},
    )
    targets: str | list[str] = field(
        default="attention",
        metadata={
            "help": "layers to decompose: attention, mlp, all-linear, or comma-separated "
            "fnmatch patterns of layer names"
        },
    )
    reproject_every_steps: int = field(
        default=128,
        metadata={"help": "re-project the factors every N optimizer steps (0: never, 'free')"},
    )
    optimizer_state: str = field(
        default="keep",
        metadata={"help": "AdamW moments of the factors at re-projection: keep or reset"},
    )
    accumulate_weights: bool = field(
        default=True,
        metadata={
            "help": "compose each decomposed weight once per optimizer step and back-propagate "
            "into the factors once (false: once per micro-batch)"
        },
    )

    def __post_init__(self) -> None:
        try:
            self.parameterization = resolve_parameterization(self.parameterization)
        except ConfigError as error:
            raise ConfigError(f"invalid decomposition.parameterization: {error}") from None
        if isinstance(self.targets, str):
            if not self.targets.strip():
                raise _invalid(
                    "decomposition.targets",
                    self.targets,
                    f"one of {', '.join(TARGET_SHORTCUTS)} or a list of layer-name patterns",
                )
        elif isinstance(self.targets, (list, tuple)):
            patterns = list(self.targets)
            if not patterns or not all(isinstance(p, str) and p.strip() for p in patterns):
                raise _invalid(
                    "decomposition.targets", self.targets, "a non-empty list of layer-name patterns"
                )
            self.targets = patterns
        else:
            raise _invalid("decomposition.targets", self.targets, "a string or a list of strings")
        _check_int("decomposition.reproject_every_steps", self.reproject_every_steps, 0)
        _check_choice("decomposition.optimizer_state", self.optimizer_state, OPTIMIZER_STATES)
        if not isinstance(self.accumulate_weights, bool):
            raise _invalid("decomposition.accumulate_weights", self.accumulate_weights, "a bool")


@dataclass
class OptimConfig:
    """AdamW and its schedule: linear warmup, then cosine decay to min_lr_ratio x lr."""

    SECTION: ClassVar[str] = "optim"

    lr: float = field(
        default=3e-3, metadata={"help": "peak learning rate, reached at the end of warmup"}
    )
    weight_decay: float = field(
        default=0.01,
        metadata={
            "help": "AdamW decoupled weight decay on weight matrices, factors and embeddings "
            "(not on norms or biases)"
        },
    )
    betas: tuple[float, float] = field(
        default=(0.9, 0.95),
        metadata={"help": "AdamW (beta1, beta2), as 'B1,B2'"},
    )
    eps: float = field(default=1e-8, metadata={"help": "AdamW denominator epsilon"})
    warmup_steps: int = field(
        default=30, metadata={"help": "optimizer steps of linear warmup from 0 to lr"}
    )
    min_lr_ratio: float = field(
        default=0.1,
        metadata={"help": "final learning rate of the cosine decay, as a fraction of lr"},
    )
    grad_clip_norm: float = field(
        default=1.0,
        metadata={"help": "clip the global gradient L2 norm to this value (0: no clipping)"},
    )

    def __post_init__(self) -> None:
        _check_float("optim.lr", self.lr, 0.0, inclusive=False)
        _check_float("optim.weight_decay", self.weight_decay, 0.0, inclusive=True)
        betas = tuple(self.betas)
        if len(betas) != 2 or not all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and 0.0 <= b < 1.0
            for b in betas
        ):
            raise _invalid("optim.betas", self.betas, "two numbers in [0, 1)")
        self.betas = (float(betas[0]), float(betas[1]))
        _check_float("optim.eps", self.eps, 0.0, inclusive=False)
        _check_int("optim.warmup_steps", self.warmup_steps, 0)
        _check_float("optim.min_lr_ratio", self.min_lr_ratio, 0.0, inclusive=True)
        if self.min_lr_ratio > 1.0:
            raise _invalid("optim.min_lr_ratio", self.min_lr_ratio, "a number in [0, 1]")
        _check_float("optim.grad_clip_norm", self.grad_clip_norm, 0.0, inclusive=True)


@dataclass
class TrainConfig:
    """Batch shape, run length, evaluation, logging, checkpoints and the device of a run."""

    SECTION: ClassVar[str] = "train"

    micro_batch_size: int = field(
        default=1, metadata={"help": "sequences per forward pass on each process"}
    )
    grad_accum_steps: int = field(
        default=8, metadata={"help": "micro-batches accumulated per optimizer step on each process"}
    )
    max_steps: int = field(default=300, metadata={"help": "optimizer steps of the run"})
    eval_every_steps: int = field(
        default=100,
        metadata={"help": "held-out loss every N optimizer steps (0: only at start and end)"},
    )
    eval_tokens: int = field(
        default=16_384, metadata={"help": "validation tokens per held-out evaluation"}
    )
    eval_batch_size: int = field(
        default=8, metadata={"help": "sequences per forward pass during evaluation"}
    )
    log_every_steps: int = field(
        default=10, metadata={"help": "write training metrics every N optimizer steps"}
    )
    diagnostics_every_steps: int = field(
        default=100,
        metadata={"help": "factor drift diagnostics every N optimizer steps (0: never)"},
    )
    checkpoint_every_steps: int = field(
        default=100,
        metadata={"help": "save a checkpoint every N optimizer steps (0: only at the end)"},
    )
    keep_checkpoints: int = field(
        default=2,
        metadata={"help": "checkpoints kept on disk, newest first (2 keeps one to fall back to)"},
    )
    seed: int = field(
        default=0, metadata={"help": "seed of the initial weights and of the batch order"}
    )
    device: str = field(
        default="auto", metadata={"help": "auto (cuda when available), cpu or cuda"}
    )
    precision: str = field(
        default="auto",
        metadata={"help": "auto (bf16 autocast on cuda, fp32 on cpu), fp32 or bf16"},
    )
    loss_divergence_margin: float = field(
        default=2.0,
        metadata={
            "help": "stop as diverged when the training loss exceeds the first step's loss "
            "by this many nats (inf: never)"
        },
    )
    threads: int = field(default=0, metadata={"help": "CPU threads for torch (0: torch's default)"})
    tensorboard: bool = field(
        default=False,
        metadata={"help": "also write metrics to TensorBoard under the run directory"},
    )

    def __post_init__(self) -> None:
        for name in ("micro_batch_size", "grad_accum_steps", "max_steps", "eval_batch_size"):
            _check_int(f"train.{name}", getattr(self, name), 1)
        _check_int("train.log_every_steps", self.log_every_steps, 1)
        _check_int("train.keep_checkpoints", self.keep_checkpoints, 1)
        for name in (
            "eval_every_steps",
            "eval_tokens",
            "diagnostics_every_steps",
            "checkpoint_every_steps",
            "seed",
            "threads",
        ):
            _check_int(f"train.{name}", getattr(self, name), 0)
        _check_choice("train.device", self.device, DEVICES)
        _check_choice("train.precision", self.precision, PRECISIONS)
        _check_float(
            "train.loss_divergence_margin",
            self.loss_divergence_margin,
            0.0,
            inclusive=False,
            allow_inf=True,
        )
        if not isinstance(self.tensorboard, bool):
            raise _invalid("train.tensorboard", self.tensorboard, "a bool")


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "decomposition": DecompositionConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
}


@dataclass
class RunConfig:
    """Everything that defines one training run; saved as config.json in its run directory."""

    model: ModelConfig = field(default_factory=ModelConfig)
    decomposition: DecompositionConfig = field(default_factory=DecompositionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        for name, cls in SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(
                    f"invalid section {name}: expected {cls.__name__}, "
                    f"got {type(getattr(self, name)).__name__}."
                )

        # A preset's limits apply only when the preset is built; a pretrained model's limits
        # are checked against its own config once it is loaded.
        if self.model.init_from is None:
            preset = self.preset
            if self.context_length > preset.max_position_embeddings:
                raise ConfigError(
                    f"invalid model.context_length = {self.context_length}; preset "
                    f"{preset.name} supports at most {preset.max_position_embeddings} "
                    "positions."
                )
            # A trained BPE's size is known now; a pretrained tokenizer's once it is loaded.
            data_vocab = self.data.vocab_size
            if self.data.tokenizer == "bpe" and data_vocab > preset.vocab_size:
                raise ConfigError(
                    f"invalid data.vocab_size = {data_vocab}; the tokenizer vocabulary must "
                    f"fit the model's, and preset {preset.name} has {preset.vocab_size} "
                    f"tokens. Use data.vocab_size <= {preset.vocab_size} or a larger preset."
                )

        if self.optim.warmup_steps > self.train.max_steps:
            warnings.warn(
                f"optim.warmup_steps = {self.optim.warmup_steps} exceeds train.max_steps = "
                f"{self.train.max_steps}, so the learning rate never reaches optim.lr",
                stacklevel=3,
            )

    @property
    def preset(self) -> Preset:
        return get_preset(self.model.preset)

    @property
    def context_length(self) -> int:
        """Sequence length in tokens: the model section's override, else the preset's."""
        if self.model.context_length is not None:
            return self.model.context_length
        return self.preset.context_length

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunConfig:
        """Build a config from nested dicts, e.g. a parsed TOML file; missing keys keep defaults.

        Unknown sections or keys raise ConfigError with a close-name suggestion.
        """
        sections = {}
        for name, section_values in values.items():
            if name not in SECTIONS:
                raise ConfigError(
                    f"unknown config section '{name}'; accepted sections: "
                    f"{', '.join(SECTIONS)}." + suggest(str(name), SECTIONS)
                )
            sections[name] = build_section(SECTIONS[name], section_values, name)
        return cls(**sections)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Return the config as nested JSON-ready dicts; `from_dict` inverts it."""
        return {name: section_to_dict(getattr(self, name)) for name in SECTIONS}

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """Read a .toml or .json config file (a run's config.json works too)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            import tomllib  # standard library from Python 3.11 on
        except ModuleNotFoundError:
            tomllib = None
        decode_errors: tuple[type[Exception], ...] = (json.JSONDecodeError, UnicodeDecodeError)
        if tomllib is not None:
            decode_errors += (tomllib.TOMLDecodeError,)
        try:
            if path.suffix == ".toml":
                if tomllib is None:
                    raise ConfigError(f"reading {path} needs Python >= 3.11 (tomllib); use .json")
                values = tomllib.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".json":
                values = json.loads(path.read_text(encoding="utf-8"))
            else:
                raise ConfigError(f"invalid config file {path}: expected a .toml or .json file.")
        except decode_errors as error:
            raise ConfigError(f"invalid config file {path}: {error}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"invalid config file {path}: expected a table of sections.")
        values.pop(RUN_INFO_KEY, None)
        return cls.from_dict(values)

    def with_overrides(self, overrides: Mapping[str, Any]) -> RunConfig:
        """Return a copy with dotted keys replaced, e.g. {"optim.lr": "1e-3"}.

        Values may be strings (parsed to the field's type) or already typed. The result is
        validated again as a whole.
        """
        values = self.to_dict()
        for key, value in overrides.items():
            section, _, name = str(key).partition(".")
            if section not in SECTIONS or not name:
                raise ConfigError(
                    f"unknown config key '{key}'; keys look like section.field with a section "
                    f"among {', '.join(SECTIONS)}." + suggest(str(key), all_config_keys())
                )
            types_by_name = field_types(SECTIONS[section])
            if name not in types_by_name:
                raise ConfigError(
                    f"unknown config key '{key}'; accepted keys of [{section}]: "
                    f"{', '.join(types_by_name)}." + suggest(str(key), all_config_keys())
                )
            values[section][name] = convert_value(key, value, types_by_name[name])
        return RunConfig.from_dict(values)

    def replace(self, **sections: Any) -> RunConfig:
        """Return a copy with whole sections replaced (dataclasses.replace, validated again)."""
        return dataclasses.replace(self, **sections)


def all_config_keys() -> list[str]:
    """Return every dotted key a config accepts, e.g. 'optim.lr'."""
    return [f"{section}.{name}" for section, cls in SECTIONS.items() for name in field_types(cls)]

"""The scales of `overparam reproduce`: grids, step budgets and seed counts per machine size.

Each scale is the study at a size a machine can run: a toy experiment, a from-scratch sweep
of Llama-3 with decomposed attention projections, and a fine-tuning sweep from pretrained
weights. The learning-rate grids, step budgets and corpus sizes below are ours. Every scale
keeps the study's AdamW with weight decay 0.01, micro-batch 1 x gradient accumulation 8,
and decomposed attention projections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from overparam.errors import ConfigError, suggest
from overparam.sweep.config import SweepConfig, deep_merge
from overparam.sweep.grid import expand_grid, format_lr

ALL_FORMS = ["dense", "SvecVD", "IvecIW", "SmatVD", "ImatIW"]

# Placeholders that `reproduce` replaces with the exported dense model's directory.
PRETRAINED_PLACEHOLDER = "{pretrained}"


@dataclass(frozen=True)
class Scale:
    """One size of the whole study."""

    name: str
    description: str
    toy: dict[str, Any]  # Toy2dConfig fields
    scratch: SweepConfig
    finetune: SweepConfig
    wall_time_estimate: str  # on the machine the scale is meant for
    runnable_here: bool = True  # False for scales that need a GPU cluster
    notes: list[str] = field(default_factory=list)

    def summary_lines(self) -> list[str]:
        """Grid, budget and seeds of both sweeps, for --help and the docs."""
        lines = [f"{self.name}: {self.description} ({self.wall_time_estimate})"]
        for label, sweep in (("from scratch", self.scratch), ("fine-tuning", self.finetune)):
            grid, train = sweep.grid, sweep.base.get("train", {})
            periods = ", ".join(str(p) if p else "free" for p in grid.reproject_every_steps)
            lrs = ", ".join(format_lr(lr) for lr in grid.lrs)
            lines.append(
                f"  {label}: {sweep.base.get('model', {}).get('preset', '?')}, "
                f"{train.get('max_steps', '?')} steps, lr {lrs}, "
                f"seeds {len(grid.seeds)}, re-projection {periods}, "
                f"{len(grid.parameterizations)} forms: {len(expand_grid(sweep))} runs"
            )
        return lines


def _sweep(
    name: str,
    grid: dict[str, Any],
    base: dict[str, Any],
    launch: dict[str, Any] | None = None,
    slurm: dict[str, Any] | None = None,
) -> SweepConfig:
    return SweepConfig.from_dict(
        {"name": name, "grid": grid, "base": base, "launch": launch or {}, "slurm": slurm or {}}
    )


# Settings every CPU-scale run shares: the study's optimizer and batch shape, a tiny model.
_CPU_BASE: dict[str, Any] = {
    "model": {"preset": "llama3-tiny"},
    "decomposition": {"targets": "attention"},
    "data": {"source": "stdlib", "max_chars": 2_000_000},
    "optim": {"weight_decay": 0.01, "warmup_steps": 10},
    "train": {
        "micro_batch_size": 1,
        "grad_accum_steps": 8,
        "max_steps": 200,
        "eval_every_steps": 50,
        "eval_tokens": 4096,
        "log_every_steps": 5,
        "diagnostics_every_steps": 25,
        "checkpoint_every_steps": 100,
        "device": "cpu",
    },
}

# Fine-tuning reads the exported model and its tokenizer, on English documentation text.
_FINETUNE_DATA = {
    "source": "stdlib-docs",
    "max_chars": 1_000_000,
    "tokenizer": PRETRAINED_PLACEHOLDER,
}


def _smoke() -> Scale:
    base = deep_merge(
        _CPU_BASE,
        {
            "data": {"max_chars": 300_000},
            "optim": {"warmup_steps": 2},
            "train": {
                "max_steps": 10,
                "eval_every_steps": 5,
                "eval_tokens": 1024,
                "log_every_steps": 1,
                "diagnostics_every_steps": 5,
                "checkpoint_every_steps": 5,
            },
        },
    )
    finetune = deep_merge(
        base,
        {
            "model": {"init_from": PRETRAINED_PLACEHOLDER},
            "data": _FINETUNE_DATA | {"max_chars": 200_000},
            "train": {"max_steps": 6},
        },
    )
    return Scale(
        name="smoke",
        description="plumbing check of every step: 1 seed, so every claim is inconclusive",
        toy={"runs": 2, "steps": 200},
        scratch=_sweep(
            "scratch",
            {
                "parameterizations": ["dense", "SvecVD", "ImatIW"],
                "reproject_every_steps": [5],
                "lrs": [1e-3, 1e-1],
                "seeds": [0],
            },
            base,
        ),
        finetune=_sweep(
            "finetune",
            {
                "parameterizations": ["dense", "SvecVD", "ImatIW"],
                "reproject_every_steps": [0],
                "lrs": [1e-3],
                "seeds": [0],
            },
            finetune,
        ),
        wall_time_estimate="about 1 minute on 2 CPU cores",
    )


def _cpu() -> Scale:
    finetune = deep_merge(
        _CPU_BASE,
        {
            "model": {"init_from": PRETRAINED_PLACEHOLDER},
            "data": _FINETUNE_DATA,
            "train": {"max_steps": 100},
        },
    )
    return Scale(
        name="cpu",
        description="the study at CPU size: tiny Llama-3, 2 seeds per cell",
        toy={"runs": 10, "steps": 1000},
        scratch=_sweep(
            "scratch",
            {
                "parameterizations": ALL_FORMS,
                "reproject_every_steps": [50, 0],
                "lrs": [1e-3, 3e-3, 1e-2, 3e-2],
                "seeds": [0, 1],
            },
            _CPU_BASE,
        ),
        finetune=_sweep(
            "finetune",
            {
                "parameterizations": ALL_FORMS,
                "reproject_every_steps": [50, 0],
                "lrs": [1e-3, 3e-3],
                "seeds": [0, 1],
            },
            finetune,
        ),
        wall_time_estimate="measured 16 min 6 s on 2 CPU cores, install included",
        notes=[
            "Runs are 200 steps (fine-tuning 100), so re-projection every 128 steps would "
            "happen at most once: the cpu scale re-projects every 50 steps instead.",
        ],
    )


def _gpu_1b() -> Scale:
    # NOTE: never run: the project's machines have no GPU and no Slurm. The command lines are
    # tested on CPU (torchrun argument list, submitit's local executor).
    base: dict[str, Any] = {
        "model": {"preset": "llama3.2-1b", "context_length": 1024},
        "decomposition": {"targets": "attention"},
        "data": {"source": "stdlib"},
        "optim": {"weight_decay": 0.01, "warmup_steps": 100},
        "train": {
            "micro_batch_size": 1,
            "grad_accum_steps": 8,
            "max_steps": 2000,
            "eval_every_steps": 100,
            "eval_tokens": 262_144,
            "log_every_steps": 10,
            "diagnostics_every_steps": 128,
            "checkpoint_every_steps": 200,
            "device": "cuda",
        },
    }
    launch = {"executor": "slurm", "nproc_per_run": 8}
    slurm = {"gpus_per_run": 8, "cpus_per_task": 64, "time_limit_minutes": 720}
    hub_model = "meta-llama/Llama-3.2-1B"
    finetune = deep_merge(
        base,
        {
            "model": {"init_from": hub_model},
            "data": {"source": "stdlib-docs", "tokenizer": hub_model},
            "train": {"max_steps": 1000},
        },
    )
    return Scale(
        name="gpu-1b",
        description="the study's setting: Llama-3.2-1B, context 1024, 8 GPUs per run through "
        "torchrun, runs submitted as a Slurm job array",
        toy={"runs": 10, "steps": 1000},
        scratch=_sweep(
            "scratch",
            {
                "parameterizations": ALL_FORMS,
                "reproject_every_steps": [128, 0],
                "lrs": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
                "seeds": [0, 1],
            },
            base,
            launch,
            slurm,
        ),
        finetune=_sweep(
            "finetune",
            {
                "parameterizations": ALL_FORMS,
                "reproject_every_steps": [128, 0],
                "lrs": [1e-5, 3e-5, 1e-4],
                "seeds": [0, 1],
            },
            finetune,
            launch,
            slurm,
        ),
        wall_time_estimate="not measured; one 8-GPU job per run",
        runnable_here=False,
        notes=[
            "Fine-tunes the published Llama-3.2-1B weights (a gated Hub model: log in with "
            "`huggingface-cli login` first) instead of an exported dense run.",
        ],
    )


SCALES: dict[str, Scale] = {scale.name: scale for scale in (_smoke(), _cpu(), _gpu_1b())}


def get_scale(name: str) -> Scale:
    if name not in SCALES:
        raise ConfigError(
            f"unknown scale {name!r}; expected one of {', '.join(SCALES)}." + suggest(name, SCALES)
        )
    return SCALES[name]

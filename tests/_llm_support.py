"""Shared helpers of the tests/test_llm_*.py files: a small corpus config and run readers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from overparam.llm.config import RunConfig

# A few hundred kB of the embedded stdlib corpus and a 512-token BPE: trained once per test
# session (cached under the session's data cache), then a cache hit for every run.
TEST_DATA = {"max_chars": 400_000, "vocab_size": 512}


def data_cache(tmp_path_factory: Any) -> Path:
    """Return the data cache directory shared by all tests of a session."""
    path = tmp_path_factory.getbasetemp() / "llm-data-cache"
    path.mkdir(exist_ok=True)
    return path


def tiny_config(cache_dir: Path, **overrides: Any) -> RunConfig:
    """Return a llama3-tiny config that trains a step in tens of milliseconds on one core.

    `overrides` are dotted keys with '__' for '.', e.g. optim__lr=1e-3.
    """
    base = {
        "data.cache_dir": str(cache_dir),
        "data.max_chars": TEST_DATA["max_chars"],
        "data.vocab_size": TEST_DATA["vocab_size"],
        "model.context_length": 32,
        "train.micro_batch_size": 2,
        "train.grad_accum_steps": 2,
        "train.max_steps": 12,
        "train.eval_tokens": 512,
        "train.eval_every_steps": 4,
        "train.log_every_steps": 1,
        "train.checkpoint_every_steps": 4,
        "train.diagnostics_every_steps": 4,
        "train.threads": 1,
        "train.device": "cpu",
        "optim.warmup_steps": 2,
        "optim.lr": 3e-3,
    }
    base.update({key.replace("__", "."): value for key, value in overrides.items()})
    return RunConfig().with_overrides(base)


def cli_args(config: RunConfig) -> list[str]:
    """Return `overparam train` flags that reproduce `config` (every field as --SECTION.FIELD)."""
    args = []
    for section, values in config.to_dict().items():
        for name, value in values.items():
            if value is None:
                text = "none"
            elif isinstance(value, list):
                text = ",".join(str(v) for v in value)
            else:
                text = str(value)
            args += [f"--{section}.{name}", text]
    return args


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def read_summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))


def loss_curve(run_dir: Path) -> list[tuple[int, float, float]]:
    """Return (step, loss/train, lr) of every training record."""
    return [
        (r["step"], r["loss/train"], r["lr"]) for r in read_metrics(run_dir) if "loss/train" in r
    ]


def eval_curve(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss/eval"]) for r in read_metrics(run_dir) if "loss/eval" in r]


def subprocess_env() -> dict[str, str]:
    """Environment of an `overparam train` subprocess: src importable, no progress bar."""
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env["OVERPARAM_NO_PROGRESS"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    return env

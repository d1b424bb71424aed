"""`overparam train` as users and schedulers drive it: options, exit codes, signals, SIGKILL."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _llm_support import (
    cli_args,
    data_cache,
    eval_curve,
    loss_curve,
    read_metrics,
    read_summary,
    subprocess_env,
    tiny_config,
)
from overparam.cli import main
from overparam.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from overparam.llm import run_training
from overparam.llm.checkpoint import (
    STALL_SECONDS_ENV,
    STALL_STEP_ENV,
    STATE_FILE,
    list_checkpoints,
    load_checkpoint,
)
from overparam.llm.config import all_config_keys

# The run the signal tests interrupt: long enough (80 steps of a few tens of ms) that a
# signal sent after step 5 arrives well before the end.
SIGNAL_RUN = {
    "model__context_length": 64,
    "train__micro_batch_size": 4,
    "train__max_steps": 80,
    "train__checkpoint_every_steps": 20,
    "train__eval_every_steps": 20,
    "train__diagnostics_every_steps": 20,
    "decomposition__parameterization": "SmatVD",
    "decomposition__reproject_every_steps": 16,
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return data_cache(tmp_path_factory)


def _data_flags(cache: Path) -> list[str]:
    return [
        "--set",
        f"data.cache_dir={cache}",
        "--set",
        "data.max_chars=400000",
        "--set",
        "data.vocab_size=512",
    ]


# --- options and validation ------------------------------------------------------------------


def test_help_lists_every_field(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["train", "--help"])
    assert caught.value.code == 0
    text = capsys.readouterr().out
    for key in all_config_keys():
        assert f"--{key}" in text
    for flag in ("--config", "--resume", "--lr", "--max-steps", "--reproject-every", "--set"):
        assert flag in text
    assert "nats" in text  # units appear in the help of the fields that have one
    assert "tokens" in text


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (
            ["--parameterization", "svecvdd"],
            ["decomposition.parameterization", "svecvdd", "Did you mean 'SvecVD'"],
        ),
        (["--lr", "0"], ["optim.lr", "0.0", "> 0"]),
        (["--lr", "fast"], ["optim.lr", "'fast'", "a number"]),
        (["--reproject-every", "-1"], ["reproject_every_steps", "-1", ">= 0"]),
        (["--train.micro_batch_size", "0"], ["train.micro_batch_size", "0", ">= 1"]),
        (["--set", "train.grad_accum_steps=0"], ["train.grad_accum_steps", "0", ">= 1"]),
        (["--model.context_length", "4096"], ["model.context_length", "4096", "at most 512"]),
        (["--preset", "llama3-huge"], ["model.preset", "llama3-huge", "llama3-tiny, llama3-small"]),
        (["--decomposition.targets", "qproj"], ["decomposition.targets", "qproj", "q_proj"]),
        (["--set", "data.vocab_size=8192"], ["data.vocab_size", "8192", "4096"]),
        (["--set", "optim.lrr=1"], ["optim.lrr", "Did you mean 'optim.lr'"]),
        (["--set", "optim.lr"], ["--set", "KEY=VALUE"]),
    ],
)
def test_invalid_config_exits_2(cache, tmp_path, caplog, args, fragments):
    out = tmp_path / "run"
    # Data flags first, so that a test's own --set of a data key overrides them.
    with caplog.at_level(logging.ERROR):
        code = main(["train", "--out", str(out), *_data_flags(cache), *args])
    assert code == EXIT_USAGE
    assert not out.exists()
    for fragment in fragments:
        assert fragment in caplog.text


def test_pretrained_tokenizer_too_large(cache, tmp_path, caplog):
    """A tokenizer with more tokens than a pretrained model's vocabulary is a config error."""
    from transformers import LlamaConfig, LlamaForCausalLM

    pretrained = tmp_path / "pretrained"
    config = LlamaConfig(
        vocab_size=300,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    LlamaForCausalLM(config).save_pretrained(pretrained)
    out = tmp_path / "run"
    args = ["train", "--out", str(out), *_data_flags(cache), "--model.init_from", str(pretrained)]
    with caplog.at_level(logging.ERROR):
        code = main([*args, "--model.context_length", "32"])
    assert code == EXIT_USAGE
    assert not out.exists()
    assert "512 tokens" in caplog.text
    assert "300" in caplog.text

    with caplog.at_level(logging.ERROR):
        code = main([*args, "--model.context_length", "128"])
    assert code == EXIT_USAGE
    assert "at most 64 positions" in caplog.text


def test_config_file_and_overrides(cache, tmp_path):
    config_path = tmp_path / "run.toml"
    config_path.write_text(
        '[decomposition]\nparameterization = "ivecIW"\n[optim]\nlr = 1e-3\nwarmup_steps = 1\n'
        "[train]\nmax_steps = 2\neval_tokens = 256\n"
    )
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--config",
            str(config_path),
            "--out",
            str(out),
            *_data_flags(cache),
            "--model.context_length",
            "32",
            "--lr",
            "2e-3",
            "--set",
            "optim.lr=4e-3",
        ]
    )
    assert code == EXIT_OK
    saved = read_summary(out)
    assert saved["parameterization"] == "IvecIW"
    assert saved["steps"] == 2
    config = json.loads((out / "config.json").read_text())
    assert config["optim"]["lr"] == 4e-3  # --set wins over --lr, which wins over the file


# --- signals and SIGKILL ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def signal_reference(cache, tmp_path_factory):
    """The uninterrupted run that every interrupted-and-resumed run must reproduce."""
    out = tmp_path_factory.mktemp("signal-reference")
    assert run_training(tiny_config(cache, **SIGNAL_RUN), out)["status"] == "completed"
    return out


def _start(config, out: Path, env_extra: dict[str, str] | None = None) -> subprocess.Popen:
    env = subprocess_env()
    env.update(env_extra or {})
    command = [sys.executable, "-m", "overparam", "train", "--out", str(out), *cli_args(config)]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait_for(condition, process: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"training ended before the test could act:\n{process.stdout.read()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("timed out waiting for the training subprocess")
        time.sleep(0.02)


def _last_step(out: Path) -> int:
    try:
        steps = [r["step"] for r in read_metrics(out) if "loss/train" in r]
    except (OSError, ValueError):
        return 0
    return max(steps, default=0)


def _assert_matches(out: Path, reference: Path) -> None:
    assert loss_curve(out) == loss_curve(reference)
    assert eval_curve(out) == eval_curve(reference)
    assert read_summary(out)["final_eval_loss"] == read_summary(reference)["final_eval_loss"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum",
    [signal.SIGTERM, signal.SIGINT, signal.SIGUSR2],
    ids=["SIGTERM", "SIGINT", "SIGUSR2"],
)
def test_signal_saves_and_resumes(cache, tmp_path, signal_reference, signum):
    config = tiny_config(cache, **SIGNAL_RUN)
    out = tmp_path / "run"
    process = _start(config, out)
    _wait_for(lambda: _last_step(out) >= 5, process)
    process.send_signal(signum)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == EXIT_INTERRUPTED, output

    summary = read_summary(out)
    stopped = summary["steps"]
    assert summary["status"] == "interrupted"
    assert signal.Signals(signum).name in summary["reason"]
    assert 5 <= stopped < 80
    assert load_checkpoint(list_checkpoints(out)[0]).step == stopped

    if signum == signal.SIGTERM:
        # Resume through the CLI with no other option: the run's config.json is the config.
        resumed = subprocess.run(
            [sys.executable, "-m", "overparam", "train", "--out", str(out), "--resume"],
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert resumed.returncode == EXIT_OK, resumed.stderr
    else:
        assert run_training(config, out, resume=True)["status"] == "completed"
    _assert_matches(out, signal_reference)


@pytest.mark.slow
def test_sigkill_mid_checkpoint(cache, tmp_path, signal_reference):
    config = tiny_config(cache, **SIGNAL_RUN)
    out = tmp_path / "run"
    stall = {STALL_SECONDS_ENV: "120", STALL_STEP_ENV: "40"}
    process = _start(config, out, stall)

    # The stall starts once both data files of step 40 are in the temporary directory.
    def stalled() -> bool:
        return any((out / "checkpoints").glob(f".tmp-step-00000040-*/{STATE_FILE}"))

    _wait_for(stalled, process)
    process.kill()
    process.wait(timeout=60)

    assert [p.name for p in list_checkpoints(out)] == ["step-00000020"]
    assert load_checkpoint(list_checkpoints(out)[0]).step == 20

    assert run_training(config, out, resume=True)["status"] == "completed"
    _assert_matches(out, signal_reference)
    assert not list((out / "checkpoints").glob(".tmp-*"))

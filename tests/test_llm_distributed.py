"""Data parallel over 2 gloo processes on this machine's loopback equals one process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

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
from overparam.llm import run_training


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("accumulate", [True, False], ids=["accumulated", "naive"])
def test_two_processes_match_one(tmp_path_factory, tmp_path, accumulate):
    cache = data_cache(tmp_path_factory)
    settings = {
        "decomposition__parameterization": "SvecVD",
        "decomposition__reproject_every_steps": 3,
        "decomposition__accumulate_weights": accumulate,
        "train__max_steps": 6,
        "train__eval_every_steps": 3,
    }
    # The same global batch of 8 sequences: 1 process x 2 x 4, or 2 processes x 2 x 2.
    single = tiny_config(cache, train__grad_accum_steps=4, **settings)
    single_out = tmp_path / "single"
    assert run_training(single, single_out)["status"] == "completed"

    parallel = tiny_config(cache, train__grad_accum_steps=2, **settings)
    parallel_out = tmp_path / "parallel"
    env = subprocess_env()
    env["GLOO_SOCKET_IFNAME"] = "lo"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        "-m",
        "overparam",
        "train",
        "--out",
        str(parallel_out),
        *cli_args(parallel),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr

    assert read_metrics(parallel_out)  # rank 0 wrote the metrics
    assert read_summary(parallel_out)["status"] == "completed"
    info = json.loads((parallel_out / "config.json").read_text())["run"]
    assert info["world_size"] == 2
    assert info["global_batch_size"] == 8

    expected, actual = loss_curve(single_out), loss_curve(parallel_out)
    assert [step for step, _, _ in actual] == [step for step, _, _ in expected]
    for (_, loss, lr), (_, expected_loss, expected_lr) in zip(actual, expected, strict=True):
        assert loss == pytest.approx(expected_loss, rel=1e-5, abs=1e-6)
        assert lr == expected_lr
    for (_, loss), (_, expected_loss) in zip(
        eval_curve(parallel_out), eval_curve(single_out), strict=True
    ):
        assert loss == pytest.approx(expected_loss, rel=1e-5, abs=1e-6)

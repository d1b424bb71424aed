"""A second signal during the checkpoint write that the first one started.

SIGTERM and SIGINT each save and resume exactly (test_llm_cli.py::test_signal_saves_and_resumes),
and SIGKILL in the middle of a checkpoint write leaves the previous one
(test_llm_cli.py::test_sigkill_mid_checkpoint). Here the first signal's checkpoint write is cut
short by a second signal, as when a user presses Ctrl-C twice.
"""

from __future__ import annotations

import logging
import signal

import pytest

import overparam.llm.checkpoint as checkpoint_module
from _llm_support import cli_args, data_cache, eval_curve, loss_curve, read_summary, tiny_config
from overparam.cli import main
from overparam.errors import EXIT_INTERRUPTED, EXIT_OK
from overparam.llm import run_training
from overparam.llm.checkpoint import list_checkpoints, load_checkpoint


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return data_cache(tmp_path_factory)


def test_second_signal_mid_checkpoint(cache, tmp_path, caplog, monkeypatch):
    config = tiny_config(cache)  # 12 steps, a checkpoint every 4
    reference = tmp_path / "reference"
    assert run_training(config, reference)["status"] == "completed"

    # The checkpoint of step 8 stops after its data files are written, before the manifest.
    # SIGTERM there requests a stop, and the SIGINT that follows is the second signal.
    def signal_twice(step: int) -> None:
        if step == 8:
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(checkpoint_module, "_maybe_stall", signal_twice)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="overparam"):
        code = main(["train", "--out", str(out), *cli_args(config)])

    assert code == EXIT_INTERRUPTED
    assert "second SIGINT" in caplog.text
    summary = read_summary(out)
    assert summary["status"] == "interrupted"
    assert "no checkpoint saved" in summary["reason"]
    # The cut-off write is only a temporary directory; step 4 is the newest checkpoint.
    assert [p.name for p in list_checkpoints(out)] == ["step-00000004"]
    assert load_checkpoint(list_checkpoints(out)[0]).step == 4
    assert len(list((out / "checkpoints").glob(".tmp-step-00000008-*"))) == 1

    monkeypatch.undo()
    assert main(["train", "--out", str(out), "--resume"]) == EXIT_OK
    assert loss_curve(out) == loss_curve(reference)
    assert eval_curve(out) == eval_curve(reference)
    assert read_summary(out)["final_eval_loss"] == read_summary(reference)["final_eval_loss"]
    assert not list((out / "checkpoints").glob(".tmp-*"))

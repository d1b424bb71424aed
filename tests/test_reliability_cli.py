"""What a failing `overparam` command shows: exit codes in every --help, tracebacks on --debug."""

from __future__ import annotations

import logging
import re
import subprocess
import sys

import pytest

from _llm_support import subprocess_env
from overparam import errors
from overparam.cli import SUBCOMMANDS, main

EXIT_CODES = {
    errors.EXIT_OK: "finished",
    errors.EXIT_FAILED: "failed",
    errors.EXIT_USAGE: "invalid",
    errors.EXIT_INTERRUPTED: "interrupted",
    errors.EXIT_LOCKED: "locked",
}


def _help_text(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("argv", [[]] + [[name] for name in SUBCOMMANDS], ids=["top", *SUBCOMMANDS])
def test_help_lists_exit_codes(capsys, argv):
    text = _help_text([*argv, "--help"], capsys)
    assert "exit codes:" in text
    section = text.split("exit codes:", 1)[1]
    for code, word in EXIT_CODES.items():
        line = re.search(rf"^\s+{code}\s+(.+)$", section, flags=re.MULTILINE)
        assert line is not None, f"exit code {code} missing from {argv} --help"
        assert word in line.group(1), line.group(1)


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_help_lists_debug_flag(capsys, name):
    assert "--debug" in _help_text([name, "--help"], capsys)


def _overparam(*flags: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "overparam", *flags]
    return subprocess.run(
        command, env=subprocess_env(), capture_output=True, text=True, timeout=120
    )


def test_traceback_only_with_debug(tmp_path):
    out = str(tmp_path / "toy")
    quiet = _overparam("toy2d", "--steps", "0", "--out", out)
    assert quiet.returncode == errors.EXIT_USAGE
    assert "invalid steps=0 (--steps)" in quiet.stderr
    assert "Traceback" not in quiet.stderr

    # --debug works before and after the subcommand.
    for flags in (["--debug", "toy2d"], ["toy2d", "--debug"]):
        loud = _overparam(*flags, "--steps", "0", "--out", out)
        assert loud.returncode == errors.EXIT_USAGE, loud.stderr
        assert "Traceback (most recent call last)" in loud.stderr
        assert "overparam.errors.ConfigError: invalid steps=0" in loud.stderr


def test_unexpected_error_hides_traceback(tmp_path, caplog, monkeypatch):
    def explode(config, out_dir):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr("overparam.toy2d.experiment.run_experiment", explode)
    argv = ["toy2d", "--runs", "1", "--steps", "1", "--out", str(tmp_path / "toy")]

    with caplog.at_level(logging.ERROR, logger="overparam"):
        assert main(argv) == errors.EXIT_FAILED
    assert "RuntimeError: simulated bug (rerun with --debug for the traceback)" in caplog.text
    assert "Traceback" not in caplog.text

    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="overparam"):
        assert main([*argv, "--debug"]) == errors.EXIT_FAILED
    assert "Traceback (most recent call last)" in caplog.text
    assert "RuntimeError: simulated bug" in caplog.text


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["report", "{tmp}/missing"], "runs directory not found: {tmp}/missing"),
        (["report", "{tmp}"], "no run directories (with a config.json) found under {tmp}"),
        (["reproduce", "--workers", "0", "--out", "{tmp}/study"], "invalid --workers 0"),
        (["sweep", "--config", "{tmp}/absent.toml"], "config file not found: {tmp}/absent.toml"),
    ],
    ids=["report-missing", "report-empty", "reproduce-workers", "sweep-config-missing"],
)
def test_bad_input_exits_2(tmp_path, caplog, argv, fragment):
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    with caplog.at_level(logging.ERROR, logger="overparam"):
        assert main(argv) == errors.EXIT_USAGE
    assert fragment.format(tmp=tmp_path) in caplog.text
    assert not (tmp_path / "study").exists()


REQUIRED_ARGS = {"sweep": ["--config", "sweep.toml"], "report": ["runs"]}


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_unknown_option_exits_2(capsys, name):
    with pytest.raises(SystemExit) as caught:
        main([name, *REQUIRED_ARGS.get(name, []), "--no-such-option"])
    assert caught.value.code == errors.EXIT_USAGE
    stderr = capsys.readouterr().err
    assert "unrecognized arguments: --no-such-option" in stderr
    assert f"usage: overparam {name}" in stderr
    assert f"see 'overparam {name} --help'" in stderr

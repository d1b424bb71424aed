"""Unusable corpora through `overparam train --data`: exit code 2, the source named, no run.

test_data_errors.py checks each message of the data pipeline in detail. These tests check
that the command line reports them the same way and creates no run directory.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from _llm_support import subprocess_env
from overparam.cli import main
from overparam.errors import EXIT_USAGE


def _write_corpora(root: Path) -> dict[str, Path]:
    root.mkdir()
    (root / "empty.txt").write_text("\n  \n\n", encoding="utf-8")
    (root / "small.txt").write_text("a corpus of one short line\n", encoding="utf-8")
    rows = [{"body": "the text is under another key"}] * 3
    (root / "nofield.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "latin1.txt").write_bytes("café au lait\n".encode("latin-1"))
    return {path.name: path for path in root.iterdir()}


CASES = {
    "missing": ("missing.txt", ["not found"]),
    "empty": ("empty.txt", ["contains no text", "empty"]),
    "too-small": ("small.txt", ["train split has", "fewer than one sequence"]),
    "no-text-field": ("nofield.jsonl", ["line 1", "no field 'text'", "data.text_field"]),
    "undecodable": ("latin1.txt", ["not valid UTF-8", "0xe9", "byte offset 3"]),
}


@pytest.mark.parametrize(("name", "fragments"), CASES.values(), ids=CASES)
def test_train_bad_corpus_exits_2(tmp_path, caplog, name, fragments):
    corpora = _write_corpora(tmp_path / "corpora")
    source = corpora.get(name, tmp_path / "corpora" / name)
    out = tmp_path / "run"
    argv = ["train", "--out", str(out), "--data", str(source)]
    argv += ["--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "data.vocab_size=300"]

    with caplog.at_level(logging.ERROR, logger="overparam"):
        code = main(argv)

    assert code == EXIT_USAGE
    assert str(source) in caplog.text
    for fragment in fragments:
        assert fragment in caplog.text
    assert not out.exists()


def test_train_hub_dataset_offline(tmp_path):
    out = tmp_path / "run"
    env = {k: v for k, v in subprocess_env().items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "overparam", "train", "--out", str(out)]
    command += ["--data", "hf:roneneldan/TinyStories", "--set", f"data.cache_dir={tmp_path}"]

    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    assert result.returncode == EXIT_USAGE, result.stderr[-2000:]
    assert "'roneneldan/TinyStories'" in result.stderr
    assert "set data.source to a local path" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()

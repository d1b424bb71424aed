"""Files a run reads but did not write: damaged checkpoints and checkpoints that ship code.

Falling back past one damaged checkpoint, and rejecting a pickle that would run code, are
tested in test_llm_checkpoint.py and test_llm_train.py. Here: every checkpoint damaged, and
Hugging Face directories whose config or tokenizer points at Python files of their own.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from _llm_support import data_cache, read_summary, subprocess_env, tiny_config
from overparam.cli import main
from overparam.errors import EXIT_FAILED, EXIT_USAGE, RunInterrupted
from overparam.llm import TrainingHooks, run_training
from overparam.llm.checkpoint import MODEL_FILE, STATE_FILE, list_checkpoints


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return data_cache(tmp_path_factory)


def test_resume_all_checkpoints_damaged(cache, tmp_path, caplog):
    def stop_at_7(step, model):
        if step == 7:
            os.kill(os.getpid(), signal.SIGTERM)

    out = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        run_training(tiny_config(cache), out, hooks=TrainingHooks(before_step=stop_at_7))
    newest, older = list_checkpoints(out)
    (newest / MODEL_FILE).write_bytes((newest / MODEL_FILE).read_bytes()[:1000])
    (older / STATE_FILE).write_bytes(b"\0" * (older / STATE_FILE).stat().st_size)
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}

    with caplog.at_level(logging.ERROR, logger="overparam"):
        code = main(["train", "--out", str(out), "--resume"])

    assert code == EXIT_FAILED
    assert "no valid checkpoint to resume from" in caplog.text
    assert f"truncated or corrupted: {newest / MODEL_FILE}" in caplog.text
    assert f"corrupted: {older / STATE_FILE} does not match its SHA-256" in caplog.text
    assert "Traceback" not in caplog.text
    # Nothing was loaded, overwritten or deleted: the run can still be inspected or repaired.
    after = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    assert after == before
    assert read_summary(out)["status"] == "interrupted"


CONFIG_CODE = """
import pathlib
pathlib.Path({marker!r}).write_text("ran")
from transformers import LlamaConfig

class UntrustedConfig(LlamaConfig):
    model_type = "overparam-untrusted"
"""

MODELING_CODE = """
from transformers import LlamaForCausalLM
from .configuration_untrusted import UntrustedConfig

class UntrustedForCausalLM(LlamaForCausalLM):
    config_class = UntrustedConfig
"""

TOKENIZER_CODE = """
import pathlib
pathlib.Path({marker!r}).write_text("ran")
from transformers import PreTrainedTokenizer

class UntrustedTokenizer(PreTrainedTokenizer):
    pass
"""


def _model_with_code(root: Path, marker: Path) -> Path:
    """A checkpoint directory whose config.json names a model type defined in its own .py files."""
    root.mkdir()
    config = {
        "model_type": "overparam-untrusted",
        "auto_map": {
            "AutoConfig": "configuration_untrusted.UntrustedConfig",
            "AutoModelForCausalLM": "modeling_untrusted.UntrustedForCausalLM",
        },
        "vocab_size": 512,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 64,
    }
    (root / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (root / "configuration_untrusted.py").write_text(CONFIG_CODE.format(marker=str(marker)))
    (root / "modeling_untrusted.py").write_text(MODELING_CODE)
    return root


def _tokenizer_with_code(root: Path, marker: Path) -> Path:
    root.mkdir()
    config = {
        "tokenizer_class": "UntrustedTokenizer",
        "auto_map": {"AutoTokenizer": ["tokenization_untrusted.UntrustedTokenizer", None]},
        "eos_token": "</s>",
    }
    (root / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    (root / "tokenization_untrusted.py").write_text(TOKENIZER_CODE.format(marker=str(marker)))
    return root


# Calls main() once per argument list in one interpreter (transformers takes seconds to
# import) and records, after each call, its exit code and which code markers exist.
CALLS_SCRIPT = """
import json, pathlib, sys
from overparam.cli import main

markers = [pathlib.Path(path) for path in json.loads(sys.argv[2])]
results = []
for argv in json.loads(sys.argv[1]):
    code = main(argv)
    results.append([code] + [marker.exists() for marker in markers])
print(json.dumps(results))
"""


def test_remote_code_needs_flag(tmp_path):
    model_marker, tokenizer_marker = tmp_path / "model-code-ran", tmp_path / "tokenizer-code-ran"
    model = _model_with_code(tmp_path / "model", model_marker)
    tokenizer = _tokenizer_with_code(tmp_path / "tokenizer", tokenizer_marker)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("some text to tokenize\n" * 200, encoding="utf-8")
    common = ["--set", f"data.cache_dir={tmp_path / 'cache'}", "--model.context_length", "32"]
    calls = [
        ["train", "--out", str(tmp_path / "a"), "--model.init_from", str(model), *common],
        ["train", "--out", str(tmp_path / "b"), "--data", str(corpus), *common]
        + ["--set", f"data.tokenizer={tokenizer}"],
        # With the flag the model's code runs; the missing corpus then stops the run.
        ["train", "--out", str(tmp_path / "c"), "--model.init_from", str(model), *common]
        + ["--trust-remote-code", "--data", str(tmp_path / "missing.txt")],
    ]
    env = {k: v for k, v in subprocess_env().items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_HUB_OFFLINE="1")
    markers = [str(model_marker), str(tokenizer_marker)]
    result = subprocess.run(
        [sys.executable, "-c", CALLS_SCRIPT, json.dumps(calls), json.dumps(markers)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    without_flag, tokenizer_call, with_flag = json.loads(result.stdout.strip().splitlines()[-1])

    assert without_flag == [EXIT_USAGE, False, False]
    assert "contains custom code" in result.stderr
    assert "runs only with --trust-remote-code" in result.stderr
    assert tokenizer_call == [EXIT_USAGE, False, False]  # a tokenizer's code never runs
    assert f"tokenizer '{tokenizer}' could not be loaded" in result.stderr
    assert with_flag == [EXIT_USAGE, True, False]
    assert f"source '{tmp_path / 'missing.txt'}' not found" in result.stderr
    assert "Traceback" not in result.stderr

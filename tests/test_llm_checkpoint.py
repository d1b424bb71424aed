"""Checkpoints: round trip, corrupted and truncated files, unsafe pickles, non-finite weights."""

from __future__ import annotations

import json
import logging
import os
import pickle

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import overparam
from overparam.errors import CheckpointError, NonFiniteWeightError
from overparam.llm.checkpoint import (
    MANIFEST_FILE,
    MODEL_FILE,
    STATE_FILE,
    _sha256,
    apply_model_state,
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
    load_training_state,
    model_tensors,
    save_checkpoint,
)


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=40,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    overparam.decompose(model, "SmatVD", "attention")
    return model


def _state(step: int) -> dict:
    return {"progress": {"step": step, "best_eval_loss": 1.5}, "rng": torch.get_rng_state()}


def _weights_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    tensors_b = model_tensors(b)
    return all(torch.equal(t, tensors_b[name]) for name, t in model_tensors(a).items())


def test_checkpoint_round_trip(tmp_path):
    model = _model()
    path = save_checkpoint(tmp_path, 7, model, _state(7), keep=2)
    assert path.name == "step-00000007"
    assert sorted(p.name for p in path.iterdir()) == [MANIFEST_FILE, MODEL_FILE, STATE_FILE]

    checkpoint = load_checkpoint(path)
    assert checkpoint.step == 7
    assert checkpoint.training_state["progress"] == {"step": 7, "best_eval_loss": 1.5}
    assert torch.equal(checkpoint.training_state["rng"], torch.get_rng_state())

    other = _model(seed=1)
    assert not _weights_equal(model, other)
    apply_model_state(other, checkpoint.model_state)
    assert _weights_equal(model, other)
    # The tied output embedding follows the input embedding.
    assert other.lm_head.weight.data_ptr() == other.model.embed_tokens.weight.data_ptr()


def test_keep_newest_checkpoints(tmp_path):
    model = _model()
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, model, _state(step), keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000004", "step-00000003"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "manifest"])
def test_damaged_checkpoint_falls_back(tmp_path, caplog, damage):
    model = _model()
    save_checkpoint(tmp_path, 1, model, _state(1), keep=3)
    newest = save_checkpoint(tmp_path, 2, model, _state(2), keep=3)
    target = newest / MODEL_FILE
    if damage == "truncate":
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "delete":
        target.unlink()
    else:
        target = newest / MANIFEST_FILE
        target.write_text("{not json")

    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(newest)
    assert str(target) in str(caught.value)

    invalid = []
    with caplog.at_level(logging.ERROR):
        checkpoint = load_latest_checkpoint(tmp_path, on_invalid=lambda p, e: invalid.append(p))
    assert checkpoint.step == 1
    assert invalid == [newest]
    assert str(target) in caplog.text


def test_no_valid_checkpoint_raises(tmp_path):
    path = save_checkpoint(tmp_path, 3, _model(), _state(3), keep=2)
    (path / STATE_FILE).write_bytes(b"")
    with pytest.raises(CheckpointError, match="no valid checkpoint"):
        load_latest_checkpoint(tmp_path)
    assert load_latest_checkpoint(tmp_path / "empty") is None


class _RunsCode:
    """A pickle payload that creates a directory when unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_code_running_pickle_rejected(tmp_path):
    path = save_checkpoint(tmp_path, 1, _model(), _state(1), keep=2)
    marker = tmp_path / "payload-ran"
    state_path = path / STATE_FILE
    payload = {"step": 1, "progress": _RunsCode(str(marker))}
    state_path.write_bytes(pickle.dumps(payload, protocol=2))
    # Update the manifest as an attacker would, so that only the loader can reject the file.
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    manifest["files"][STATE_FILE] = {
        "bytes": state_path.stat().st_size,
        "sha256": _sha256(state_path),
    }
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))

    with pytest.raises(CheckpointError) as caught:
        load_training_state(state_path)
    assert "would run code" in str(caught.value)
    assert str(state_path) in str(caught.value)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


def test_nonfinite_weights_not_saved(tmp_path):
    model = _model()
    good = save_checkpoint(tmp_path, 1, model, _state(1), keep=1)
    before = (good / MODEL_FILE).read_bytes()
    with torch.no_grad():
        model.model.layers[0].self_attn.v_proj.U[0, 0] = float("inf")
    with pytest.raises(NonFiniteWeightError, match="v_proj.U"):
        save_checkpoint(tmp_path, 2, model, _state(2), keep=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000001"]
    assert (good / MODEL_FILE).read_bytes() == before
    assert load_checkpoint(good).step == 1


def test_leftover_temporary_ignored(tmp_path):
    model = _model()
    save_checkpoint(tmp_path, 1, model, _state(1), keep=2)
    leftover = tmp_path / "checkpoints" / ".tmp-step-00000002-999999"
    leftover.mkdir()
    (leftover / MODEL_FILE).write_bytes(b"partial")
    assert load_latest_checkpoint(tmp_path).step == 1
    save_checkpoint(tmp_path, 2, model, _state(2), keep=2)
    assert not leftover.exists()  # cleaned up by the next save


def test_same_step_resaved(tmp_path):
    model = _model()
    save_checkpoint(tmp_path, 5, model, _state(5), keep=2)
    with torch.no_grad():
        model.model.norm.weight.fill_(2.0)
    save_checkpoint(tmp_path, 5, model, _state(5), keep=2)
    checkpoint = load_latest_checkpoint(tmp_path)
    assert torch.equal(checkpoint.model_state["model.norm.weight"], torch.full((16,), 2.0))
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000005"]


def test_mismatched_weights_change_nothing(tmp_path):
    model = _model()
    checkpoint = load_checkpoint(save_checkpoint(tmp_path, 1, model, _state(1), keep=1))
    other = _model(seed=3)
    before = {name: t.clone() for name, t in model_tensors(other).items()}

    state = dict(checkpoint.model_state)
    state["model.norm.weight"] = torch.ones(17)
    with pytest.raises(CheckpointError, match="model.norm.weight"):
        apply_model_state(other, state)
    state = dict(checkpoint.model_state)
    del state["model.layers.0.self_attn.q_proj.S"]
    with pytest.raises(CheckpointError, match="missing"):
        apply_model_state(other, state)
    assert all(torch.equal(t, before[name]) for name, t in model_tensors(other).items())

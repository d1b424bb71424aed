"""End-to-end training runs of llama3-tiny on the embedded corpus, in this process."""

from __future__ import annotations

import json
import logging
import math
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

import overparam
from _llm_support import (
    data_cache,
    eval_curve,
    loss_curve,
    read_metrics,
    read_summary,
    tiny_config,
)
from overparam.cli import main
from overparam.errors import EXIT_LOCKED, EXIT_OK, ConfigError, RunInterrupted
from overparam.llm import TrainingHooks, run_training
from overparam.llm.checkpoint import MODEL_FILE, list_checkpoints, load_checkpoint
from overparam.llm.data import TokenBatches
from overparam.llm.loop import TrainingLoop
from overparam.llm.model import build_model, model_config
from overparam.llm.rundir import RunLock

PARAMETERIZATIONS = overparam.PARAMETERIZATIONS


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return data_cache(tmp_path_factory)


def _interrupt_at(step: int) -> TrainingHooks:
    """Hooks that send this process SIGTERM before step `step`, as a scheduler would."""

    def before_step(current: int, model: torch.nn.Module) -> None:
        if current == step:
            os.kill(os.getpid(), signal.SIGTERM)

    return TrainingHooks(before_step=before_step)


# --- learning --------------------------------------------------------------------------------


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_eval_loss_falls(cache, tmp_path, parameterization):
    config = tiny_config(
        cache,
        decomposition__parameterization=parameterization,
        model__context_length=64,
        train__micro_batch_size=4,
        train__max_steps=120,
        train__eval_tokens=2048,
        train__eval_every_steps=0,
        train__log_every_steps=20,
        train__checkpoint_every_steps=0,
        train__diagnostics_every_steps=0,
        optim__lr=5e-3,
        optim__warmup_steps=10,
    )
    summary = run_training(config, tmp_path / "run")
    assert summary["status"] == "completed"
    assert summary["steps"] == 120
    # From scratch the initial loss is about ln(vocabulary size). A working run learns at
    # least the token frequencies, which takes the loss more than a nat lower.
    assert summary["initial_eval_loss"] == pytest.approx(math.log(512), abs=0.1)
    assert summary["final_eval_loss"] < summary["initial_eval_loss"] - 1.0
    assert summary["best_eval_loss"] == summary["final_eval_loss"]


def test_same_seed_same_start(cache):
    """Every parameterization starts from the dense weights of the seed."""
    base = tiny_config(cache)
    device = torch.device("cpu")
    dense = build_model(base, model_config(base, 512), device).model
    dense_weights = {name: p.detach() for name, p in dense.named_parameters()}
    for parameterization in PARAMETERIZATIONS[1:]:
        config = base.with_overrides({"decomposition.parameterization": parameterization})
        built = build_model(config, model_config(config, 512), device)
        layers = overparam.decomposed_layers(built.model)
        assert sorted(layers) == sorted(built.decomposed_layers)
        for name, layer in layers.items():
            expected = dense_weights[f"{name}.weight"]
            assert torch.allclose(layer.compose(), expected, atol=1e-6, rtol=0)
        for name, parameter in built.model.named_parameters():
            if name.rsplit(".", 1)[-1] not in ("U", "S", "V"):
                assert torch.equal(parameter, dense_weights[name]), name

    other_seed = base.with_overrides({"train.seed": 1})
    other = build_model(other_seed, model_config(other_seed, 512), device).model
    assert not torch.equal(
        other.model.embed_tokens.weight, dense_weights["model.embed_tokens.weight"]
    )


def test_same_seed_same_batches(cache, tmp_path, monkeypatch):
    seen: dict[str, list[torch.Tensor]] = {}
    original = TrainingLoop._micro_batches

    def recording(self, step):
        batches = original(self, step)
        seen.setdefault(self.config.decomposition.parameterization, []).extend(
            input_ids.clone() for input_ids, _ in batches
        )
        return batches

    monkeypatch.setattr(TrainingLoop, "_micro_batches", recording)
    for parameterization in ("dense", "SmatVD", "IvecIW"):
        config = tiny_config(
            cache, decomposition__parameterization=parameterization, train__max_steps=3
        )
        run_training(config, tmp_path / parameterization)
    reference = seen["dense"]
    assert len(reference) == 3 * 2  # steps x micro-batches
    for parameterization in ("SmatVD", "IvecIW"):
        assert all(
            torch.equal(a, b) for a, b in zip(reference, seen[parameterization], strict=True)
        )
    # The loop draws from the seed's TokenBatches, in step order.
    assert any(not torch.equal(reference[0], batch) for batch in reference[1:])


# --- resume ----------------------------------------------------------------------------------


RESUME_CASES = {
    "SvecVD-keep": {"decomposition__parameterization": "SvecVD"},
    "ImatIW-reset-naive": {
        "decomposition__parameterization": "ImatIW",
        "decomposition__optimizer_state": "reset",
        "decomposition__accumulate_weights": False,
    },
}


def _resume_config(cache, case):
    return tiny_config(cache, decomposition__reproject_every_steps=3, **RESUME_CASES[case])


@pytest.fixture(scope="module")
def straight_runs(cache, tmp_path_factory):
    """Uninterrupted reference runs of each resume case."""
    runs = {}
    for case in RESUME_CASES:
        out = tmp_path_factory.mktemp(f"straight-{case}")
        summary = run_training(_resume_config(cache, case), out)
        assert summary["status"] == "completed"
        runs[case] = out
    return runs


def _assert_same_run(actual, expected):
    assert loss_curve(actual) == loss_curve(expected)  # bit for bit: floats compared exactly
    assert eval_curve(actual) == eval_curve(expected)
    final_actual = load_file(str(list_checkpoints(actual)[0] / MODEL_FILE))
    final_expected = load_file(str(list_checkpoints(expected)[0] / MODEL_FILE))
    assert final_actual.keys() == final_expected.keys()
    assert all(torch.equal(final_actual[k], final_expected[k]) for k in final_expected)
    summary, reference = read_summary(actual), read_summary(expected)
    for key in (
        "status",
        "steps",
        "tokens",
        "final_eval_loss",
        "best_eval_loss",
        "initial_eval_loss",
    ):
        assert summary[key] == reference[key], key


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_resume_bit_identical(cache, tmp_path, straight_runs, case):
    config = _resume_config(cache, case)
    out = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        run_training(config, out, hooks=_interrupt_at(7))
    summary = read_summary(out)
    assert summary["status"] == "interrupted"
    assert summary["steps"] == 7
    assert "SIGTERM" in summary["reason"]
    assert [p.name for p in list_checkpoints(out)] == ["step-00000007", "step-00000004"]

    resumed = run_training(config, out, resume=True)
    assert resumed["status"] == "completed"
    _assert_same_run(out, straight_runs[case])

    # Records of every step appear once, and the resumed run reprojected on schedule.
    steps = [r["step"] for r in read_metrics(out) if "loss/train" in r]
    assert steps == list(range(1, 13))
    reprojections = [r for r in read_metrics(out) if r.get("event") == "reproject"]
    assert [r["step"] for r in reprojections] == [3, 6, 9, 12]
    assert all(r["layers"] == 8 for r in reprojections)  # q, k, v, o of 2 layers


def test_resume_falls_back_past_corrupt(cache, tmp_path, straight_runs, caplog):
    config = _resume_config(cache, "SvecVD-keep")
    out = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        run_training(config, out, hooks=_interrupt_at(9))
    newest = list_checkpoints(out)[0]
    assert newest.name == "step-00000009"
    damaged = newest / MODEL_FILE
    damaged.write_bytes(damaged.read_bytes()[:100])

    with caplog.at_level(logging.ERROR):
        run_training(config, out, resume=True)
    assert str(damaged) in caplog.text
    assert "truncated" in caplog.text
    _assert_same_run(out, straight_runs["SvecVD-keep"])


def test_resume_finished_run_returns_summary(cache, straight_runs):
    out = straight_runs["SvecVD-keep"]
    before = (out / "metrics.jsonl").read_bytes()
    summary = run_training(_resume_config(cache, "SvecVD-keep"), out, resume=True)
    assert summary == read_summary(out)
    assert (out / "metrics.jsonl").read_bytes() == before


def test_resume_rejects_changed_config(cache, straight_runs, tmp_path):
    out = straight_runs["SvecVD-keep"]
    changed = _resume_config(cache, "SvecVD-keep").with_overrides({"optim.lr": 1e-3})
    with pytest.raises(ConfigError, match="optim.lr"):
        run_training(changed, out, resume=True)


def test_existing_run_needs_resume(cache, straight_runs):
    out = straight_runs["SvecVD-keep"]
    with pytest.raises(ConfigError, match="already contains a run"):
        run_training(_resume_config(cache, "SvecVD-keep"), out)


# --- run directory contents ------------------------------------------------------------------


def test_run_directory_records(cache, straight_runs):
    out = straight_runs["SvecVD-keep"]
    saved = json.loads((out / "config.json").read_text())
    assert saved["decomposition"]["parameterization"] == "SvecVD"
    info = saved["run"]
    assert info["world_size"] == 1
    assert info["tokens_per_step"] == 2 * 2 * 32
    assert info["data_fingerprint"]["vocab_size"] == 512
    assert info["versions"]["torch"] == torch.__version__
    assert info["logit_relative_error"] < 1e-4
    assert len(info["decomposed_layers"]) == 8

    records = read_metrics(out)
    train = [r for r in records if "loss/train" in r]
    for key in ("step", "tokens", "lr", "grad_norm", "time/step(ms)", "throughput(tokens/s)"):
        assert key in train[0]
    assert [r["tokens"] for r in train] == [128 * step for step in range(1, 13)]
    drift = [r for r in records if "drift/orth_error_U" in r]
    assert [r["step"] for r in drift] == [4, 8, 12]
    assert len(drift[0]["diagnostics"]) == 8
    assert [step for step, _ in eval_curve(out)] == [0, 4, 8, 12]

    summary = read_summary(out)
    assert summary["final_eval_loss"] == eval_curve(out)[-1][1]
    assert summary["best_eval_loss"] == min(loss for _, loss in eval_curve(out))
    assert summary["initial_eval_loss"] == eval_curve(out)[0][1]
    assert summary["tokens"] == 12 * 128


# --- divergence and failures -----------------------------------------------------------------


def test_huge_lr_diverges(cache, tmp_path, caplog):
    out = tmp_path / "run"
    args = [
        "train",
        "--out",
        str(out),
        "--lr",
        "1e3",
        "--max-steps",
        "30",
        "--set",
        f"data.cache_dir={cache}",
        "--set",
        "data.max_chars=400000",
        "--set",
        "data.vocab_size=512",
        "--model.context_length",
        "32",
        "--train.micro_batch_size",
        "2",
        "--train.grad_accum_steps",
        "1",
        "--optim.warmup_steps",
        "1",
        "--train.eval_tokens",
        "256",
        "--train.threads",
        "1",
    ]
    assert main(args) == EXIT_OK
    summary = read_summary(out)
    assert summary["status"] == "diverged"
    assert 1 < summary["diverged_step"] <= 30
    assert summary["steps"] == summary["diverged_step"] - 1
    assert "nats" in summary["reason"] or "non-finite" in summary["reason"]
    assert summary["final_eval_loss"] is None
    events = [r for r in read_metrics(out) if r.get("event") == "diverged"]
    assert [e["step"] for e in events] == [summary["diverged_step"]]
    for path in list_checkpoints(out):
        assert load_checkpoint(path).step < summary["diverged_step"]


# A NaN in q_proj can vanish from the loss, because CPU SDPA may turn a NaN query into a
# zero output. It then shows up in the gradient norm. A NaN in o_proj reaches the loss.
@pytest.mark.parametrize("layer", ["o_proj", "q_proj"])
def test_nan_weight_diverges(cache, tmp_path, layer):
    def inject(step, model):
        if step == 6:
            with torch.no_grad():
                model.get_submodule(f"model.layers.1.self_attn.{layer}").U[0, 0] = float("nan")

    config = tiny_config(cache, decomposition__parameterization="SmatVD")
    summary = run_training(config, tmp_path / "run", hooks=TrainingHooks(before_step=inject))
    assert summary["status"] == "diverged"
    assert summary["diverged_step"] == 6
    assert summary["reason"].startswith("non-finite")
    # The last checkpoint is the finite one of step 4, and nothing newer was written.
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-00000004"]
    state = load_checkpoint(list_checkpoints(tmp_path / "run")[0]).model_state
    assert all(torch.isfinite(t).all() for t in state.values())


def test_reproject_nonfinite_diverges(cache, tmp_path):
    def inject(step, model):
        if step == 6:
            with torch.no_grad():
                model.get_submodule("model.layers.0.self_attn.k_proj").V[1, 1] = float("inf")

    config = tiny_config(
        cache, decomposition__parameterization="SvecVD", decomposition__reproject_every_steps=3
    )
    hooks = TrainingHooks(after_optimizer_step=inject)
    summary = run_training(config, tmp_path / "run", hooks=hooks)
    assert summary["status"] == "diverged"
    assert summary["diverged_step"] == 6
    assert "model.layers.0.self_attn.k_proj" in summary["reason"]
    reprojections = [
        r["step"] for r in read_metrics(tmp_path / "run") if r.get("event") == "reproject"
    ]
    assert reprojections == [3]


def test_unexpected_error_marks_failed(cache, tmp_path):
    def explode(step, model):
        if step == 3:
            raise RuntimeError("simulated device fault")

    with pytest.raises(RuntimeError, match="simulated device fault"):
        run_training(tiny_config(cache), tmp_path / "run", hooks=TrainingHooks(before_step=explode))
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == "failed"
    assert summary["reason"] == "RuntimeError: simulated device fault"
    assert summary["steps"] == 2


def test_locked_run_exits_4(cache, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with RunLock(out):
        code = main(
            [
                "train",
                "--out",
                str(out),
                "--set",
                f"data.cache_dir={cache}",
                "--set",
                "data.max_chars=400000",
                "--set",
                "data.vocab_size=512",
            ]
        )
    assert code == EXIT_LOCKED
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_token_batches_follow_seed(cache):
    # The data order depends on the seed only, never on the parameterization.
    config = tiny_config(cache)
    from overparam.llm.data import prepare_data

    prepared = prepare_data(config.data, config.context_length)
    first = TokenBatches(prepared.train_tokens, 32, seed=0).micro_batch(0, 0, 2, 2)
    again = TokenBatches(prepared.train_tokens, 32, seed=0).micro_batch(0, 0, 2, 2)
    other = TokenBatches(prepared.train_tokens, 32, seed=1).micro_batch(0, 0, 2, 2)
    assert torch.equal(first[0], again[0])
    assert not torch.equal(first[0], other[0])


# --- export and fine-tuning ------------------------------------------------------------------


def test_export_then_finetune(cache, straight_runs, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from overparam.llm import export_pretrained

    source = straight_runs["SvecVD-keep"]
    dest = export_pretrained(source, tmp_path / "export")
    exported = AutoModelForCausalLM.from_pretrained(dest)
    tokenizer = AutoTokenizer.from_pretrained(dest)
    assert len(tokenizer) == 512
    # The export contains plain nn.Linear layers with the run's effective weights.
    assert not overparam.decomposed_layers(exported)
    state = load_checkpoint(list_checkpoints(source)[0]).model_state
    U, S, V = (state[f"model.layers.0.self_attn.v_proj.{name}"] for name in "USV")
    weight = exported.model.layers[0].self_attn.v_proj.weight.detach()
    assert torch.allclose(weight, U @ torch.diag(S) @ V.T, atol=1e-6)

    # Fine-tuning from the export, with its tokenizer, starts where the source run ended:
    # same token ids, same validation split, same function up to the re-decomposition.
    config = _resume_config(cache, "SvecVD-keep").with_overrides(
        {
            "model.init_from": str(dest),
            "data.tokenizer": str(dest),
            "decomposition.parameterization": "SmatVD",
            "train.max_steps": 2,
        }
    )
    summary = run_training(config, tmp_path / "finetune")
    assert summary["status"] == "completed"
    assert summary["logit_relative_error"] < 1e-4
    assert summary["initial_eval_loss"] == pytest.approx(
        read_summary(source)["final_eval_loss"], abs=1e-4
    )

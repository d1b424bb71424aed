"""Step time, re-projection cost, harness overhead and memory of decomposed training.

    python benchmarks/step_time.py [--parameterization SvecVD] [--repeats 5] [--json]

Measures, on the CPU of the machine it runs on:

- step time of dense, naive decomposed (every micro-batch composes or chains the factors) and
  optimized decomposed (WeightAccumulator: compose once per optimizer step) training, at the
  ``llama3-small`` preset with micro-batch 1 x accumulation 8, and for a single attention
  projection at Llama-3.2-1B shapes (2048 x 2048, 1024 tokens per micro-batch);
- the time of one batched re-projection of every decomposed layer, and its share of training
  time when it runs every 128 steps;
- the throughput of the training harness against a minimal hand-written PyTorch loop on the
  same model and batches;
- peak RSS of a decomposed run over a dense one, each in a fresh process, against the bound
  that the extra parameters, their gradients and the AdamW moments imply.

Runs of the modes alternate and warm-up steps are excluded; each figure is the median of the
repeats. ``--json`` prints one machine-readable line last.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from transformers import LlamaForCausalLM

import overparam
from overparam.llm.presets import get_preset
from overparam.parameterizations import parameter_count

log = logging.getLogger("benchmarks.step_time")

MODES = ("dense", "naive", "optimized")


# --- model steps -----------------------------------------------------------------------------


def build_llama(preset_name: str, parameterization: str, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    model = LlamaForCausalLM(get_preset(preset_name).llama_config())
    overparam.decompose(model, parameterization)
    return model


def make_batches(vocab_size: int, micro_batches: int, micro_batch_size: int, context: int):
    generator = torch.Generator().manual_seed(1)
    return [
        torch.randint(0, vocab_size, (micro_batch_size, context), generator=generator)
        for _ in range(micro_batches)
    ]


class Stepper:
    """One optimizer step of a model over fixed micro-batches, naive or accumulated."""

    def __init__(self, model: nn.Module, batches, loss_fn, accumulate: bool) -> None:
        self.model = model
        self.batches = batches
        self.loss_fn = loss_fn
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
        self.accumulator = overparam.WeightAccumulator(model) if accumulate else None

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.accumulator is not None:
            self.accumulator.begin()
        for batch in self.batches:
            (self.loss_fn(self.model, batch) / len(self.batches)).backward()
        if self.accumulator is not None:
            self.accumulator.finish()
        self.optimizer.step()


def llama_loss(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids, labels=input_ids).loss


def projection_loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).square().mean()


def time_modes(
    steppers: dict[str, Stepper], repeats: int, steps_per_repeat: int, warmup_steps: int
) -> dict[str, float]:
    """Median seconds per optimizer step of each mode; modes alternate within every repeat."""
    for stepper in steppers.values():
        for _ in range(warmup_steps):
            stepper.step()
    samples: dict[str, list[float]] = {mode: [] for mode in steppers}
    for _ in range(repeats):
        for mode, stepper in steppers.items():
            start = time.perf_counter()
            for _ in range(steps_per_repeat):
                stepper.step()
            samples[mode].append((time.perf_counter() - start) / steps_per_repeat)
    return {mode: statistics.median(values) for mode, values in samples.items()}


def llama_steppers(
    preset_name: str, parameterization: str, micro_batches: int
) -> dict[str, Stepper]:
    preset = get_preset(preset_name)
    batches = make_batches(preset.vocab_size, micro_batches, 1, preset.context_length)
    dense = build_llama(preset_name, "dense")
    naive = build_llama(preset_name, parameterization)
    optimized = build_llama(preset_name, parameterization)
    return {
        "dense": Stepper(dense, batches, llama_loss, accumulate=False),
        "naive": Stepper(naive, batches, llama_loss, accumulate=False),
        "optimized": Stepper(optimized, batches, llama_loss, accumulate=True),
    }


def projection_steppers(
    features: int, tokens: int, parameterization: str, micro_batches: int
) -> dict[str, Stepper]:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(2)
    batches = [torch.randn(1, tokens, features, generator=generator) for _ in range(micro_batches)]
    steppers = {}
    for mode in MODES:
        linear = nn.Linear(features, features, bias=False)
        layer = (
            linear
            if mode == "dense"
            else overparam.DecomposedLinear.from_linear(linear, parameterization)
        )
        steppers[mode] = Stepper(layer, batches, projection_loss, accumulate=mode == "optimized")
    return steppers


# --- FLOP estimates --------------------------------------------------------------------------


def llama_step_flops(preset_name: str, micro_batches: int) -> float:
    """Dense training FLOPs of one step: 6 x parameters x tokens, plus attention scores."""
    preset = get_preset(preset_name)
    tokens = micro_batches * preset.context_length
    attention = 12 * preset.num_hidden_layers * preset.hidden_size * preset.context_length * tokens
    return 6.0 * preset.num_parameters() * tokens + attention / 2  # causal: half the scores


def compose_flops(out_features: int, in_features: int, parameterization: str) -> float:
    """FLOPs to form U·S·Vᵀ once and back-propagate through it (backward = 2 x forward)."""
    rank = min(out_features, in_features)
    forward = 2.0 * out_features * rank * in_features
    if parameterization in ("SmatVD", "ImatIW"):
        forward += 2.0 * out_features * rank * rank
    return 3.0 * forward


def attention_shapes(preset_name: str) -> list[tuple[int, int]]:
    """(out, in) of q_proj, k_proj, v_proj and o_proj in one layer of the preset."""
    preset = get_preset(preset_name)
    q_width = preset.num_attention_heads * preset.head_dim
    kv_width = preset.num_key_value_heads * preset.head_dim
    hidden = preset.hidden_size
    return [(q_width, hidden), (kv_width, hidden), (kv_width, hidden), (hidden, q_width)]


def llama_compose_flops(preset_name: str, parameterization: str) -> float:
    shapes = attention_shapes(preset_name)
    per_layer = sum(compose_flops(o, i, parameterization) for o, i in shapes)
    return get_preset(preset_name).num_hidden_layers * per_layer


def llama_extra_parameters(preset_name: str, parameterization: str) -> int:
    shapes = attention_shapes(preset_name)
    extra = sum(parameter_count(o, i, parameterization) - o * i for o, i in shapes)
    return get_preset(preset_name).num_hidden_layers * extra


# --- re-projection ---------------------------------------------------------------------------


def time_reprojection(preset_name: str, parameterization: str, repeats: int) -> dict[str, float]:
    model = build_llama(preset_name, parameterization)
    layers = list(overparam.decomposed_layers(model).values())
    overparam.reproject(model)  # warm-up
    batched, per_layer = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        overparam.reproject(model)
        batched.append(time.perf_counter() - start)
        start = time.perf_counter()
        for layer in layers:
            layer.reproject()
        per_layer.append(time.perf_counter() - start)
    return {"batched_s": statistics.median(batched), "per_layer_s": statistics.median(per_layer)}


# --- harness overhead ------------------------------------------------------------------------


def harness_config(preset_name: str, parameterization: str, steps: int, out_dir: Path):
    from overparam.llm.config import RunConfig

    return RunConfig().with_overrides(
        {
            "model.preset": preset_name,
            "decomposition.parameterization": parameterization,
            "decomposition.reproject_every_steps": 0,
            "data.max_chars": 2_000_000,
            "data.cache_dir": str(out_dir / "cache"),
            "train.max_steps": steps,
            "optim.warmup_steps": 1,
            "train.log_every_steps": 1,
            "train.eval_every_steps": 0,
            "train.diagnostics_every_steps": 0,
            "train.checkpoint_every_steps": 0,
            "train.device": "cpu",
        }
    )


def minimal_loop_step_times(config, steps: int) -> list[float]:
    """Seconds per step of a hand-written loop: same model, batches, loss, clipping, AdamW."""
    from overparam.llm.data import TokenBatches, prepare_data
    from overparam.llm.model import build_model, model_config

    prepared = prepare_data(config.data, config.context_length)
    batches = TokenBatches(prepared.train_tokens, config.context_length, config.train.seed)
    model = build_model(
        config, model_config(config, prepared.vocab_size), torch.device("cpu")
    ).model
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=config.optim.lr,
        betas=tuple(config.optim.betas),
        weight_decay=config.optim.weight_decay,
    )
    accumulator = (
        overparam.WeightAccumulator(model) if parameterization_of(config) != "dense" else None
    )
    train = config.train
    times = []
    for step in range(steps):
        start = time.perf_counter()
        micro = [
            batches.micro_batch(step, index, train.micro_batch_size, train.grad_accum_steps)
            for index in range(train.grad_accum_steps)
        ]
        tokens = sum(int(labels.numel()) for _, labels in micro)
        optimizer.zero_grad(set_to_none=True)
        if accumulator is not None:
            accumulator.begin()
        for input_ids, labels in micro:
            logits = model(input_ids).logits  # (B, T, vocab)
            loss = torch.nn.functional.cross_entropy(
                logits.flatten(0, 1), labels.flatten(), reduction="sum"
            )
            (loss / tokens).backward()
        if accumulator is not None:
            accumulator.finish()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip_norm)
        optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def parameterization_of(config) -> str:
    return config.decomposition.parameterization


def harness_step_times(config, out_dir: Path) -> list[float]:
    from overparam.llm.train import run_training

    run_dir = out_dir / f"run-{time.monotonic_ns()}"
    run_training(config, run_dir)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return [r["time/step(ms)"] / 1e3 for r in records if "time/step(ms)" in r]


def harness_throughput_ratio(
    preset_name: str, parameterization: str, steps: int, rounds: int = 2
) -> dict[str, float]:
    """Throughput of the training harness over a minimal loop (same model and batches).

    Both sides time the optimizer step only (batches, forward, backward, clipping, AdamW);
    evaluation and checkpoints are off. The first two steps of each run are warm-up.
    """
    harness, minimal = [], []
    with tempfile.TemporaryDirectory() as directory:
        out_dir = Path(directory)
        config = harness_config(preset_name, parameterization, steps, out_dir)
        for _ in range(rounds):
            harness.extend(harness_step_times(config, out_dir)[2:])
            minimal.extend(minimal_loop_step_times(config, steps)[2:])
    harness_s, minimal_s = statistics.median(harness), statistics.median(minimal)
    return {
        "harness_step_s": harness_s,
        "minimal_step_s": minimal_s,
        "ratio": minimal_s / harness_s,
    }


# --- memory ----------------------------------------------------------------------------------


def _status_bytes(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in bytes; Linux only."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not found in /proc/self/status")


def peak_rss_child(preset_name: str, parameterization: str, accumulate: bool, steps: int) -> None:
    """Run a few training steps; print the baseline RSS and the peak RSS, in bytes, as JSON.

    The peak is reset after the imports (writing 5 to /proc/self/clear_refs resets VmHWM on
    Linux >= 4.0), so the figure covers the model, its optimizer and the training steps.
    """
    Path("/proc/self/clear_refs").write_text("5")
    baseline = _status_bytes("VmRSS")
    preset = get_preset(preset_name)
    model = build_llama(preset_name, parameterization)
    batches = make_batches(preset.vocab_size, 8, 1, preset.context_length)
    stepper = Stepper(model, batches, llama_loss, accumulate=accumulate)
    for _ in range(steps):
        stepper.step()
    print(json.dumps({"baseline": baseline, "peak": _status_bytes("VmHWM")}))


def measure_peak_rss(preset_name: str, parameterization: str, steps: int) -> dict[str, float]:
    results = {}
    for name, form, accumulate in (
        ("dense", "dense", False),
        ("decomposed", parameterization, True),
    ):
        command = [
            sys.executable,
            __file__,
            "--rss-child",
            form,
            "--preset",
            preset_name,
            "--rss-steps",
            str(steps),
        ]
        if accumulate:
            command.append("--accumulate")
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[name] = json.loads(output.strip().splitlines()[-1])

    # Each extra parameter carries its value, its gradient and two AdamW moments (4 x fp32);
    # the accumulated weights add W and dL/dW for every decomposed layer.
    preset = get_preset(preset_name)
    extra = llama_extra_parameters(preset_name, parameterization)
    cached = 2 * preset.num_attention_parameters()
    bound_bytes = 4.0 * (4 * extra + cached)
    dense = results["dense"]["peak"] - results["dense"]["baseline"]
    decomposed = results["decomposed"]["peak"] - results["decomposed"]["baseline"]
    return {
        "dense_peak_bytes": results["dense"]["peak"],
        "decomposed_peak_bytes": results["decomposed"]["peak"],
        "ratio": results["decomposed"]["peak"] / results["dense"]["peak"],
        "training_ratio": decomposed / dense,
        "training_bound_ratio": (dense + bound_bytes) / dense,
    }


# --- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parameterization", default="SvecVD", help="decomposed form to time")
    parser.add_argument("--preset", default="llama3-small", help="model preset for the step time")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per mode (median)")
    parser.add_argument(
        "--steps-per-repeat", type=int, default=2, help="optimizer steps per repeat"
    )
    parser.add_argument("--skip-projection", action="store_true", help="skip the 2048x2048 case")
    parser.add_argument("--skip-harness", action="store_true", help="skip the harness comparison")
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    parser.add_argument("--rss-steps", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--accumulate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.rss_child:
        peak_rss_child(args.preset, args.rss_child, args.accumulate, args.rss_steps)
        return 0

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    form = overparam.resolve_parameterization(args.parameterization)
    result: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "parameterization": form,
        "preset": args.preset,
    }

    log.info("step time at %s, micro-batch 1 x accumulation 8, %s", args.preset, form)
    times = time_modes(llama_steppers(args.preset, form, 8), args.repeats, args.steps_per_repeat, 1)
    result["step_time_s"] = times
    result["step_time_ratio_naive"] = times["naive"] / times["dense"]
    result["step_time_ratio_optimized"] = times["optimized"] / times["dense"]
    dense_flops = llama_step_flops(args.preset, 8)
    result["flop_floor_ratio"] = 1.0 + llama_compose_flops(args.preset, form) / dense_flops
    for mode, seconds in times.items():
        log.info("  %-9s %8.1f ms/step  ratio %.3f", mode, 1e3 * seconds, seconds / times["dense"])
    log.info("  FLOP floor of the optimized ratio: %.3f", result["flop_floor_ratio"])

    if not args.skip_projection:
        log.info("single projection 2048 x 2048, 1024 tokens, 1 x 8, %s", form)
        projection = time_modes(projection_steppers(2048, 1024, form, 8), 3, 1, 1)
        result["projection_step_time_s"] = projection
        result["projection_ratio_naive"] = projection["naive"] / projection["dense"]
        result["projection_ratio_optimized"] = projection["optimized"] / projection["dense"]
        result["projection_flop_floor_ratio"] = 1.0 + compose_flops(2048, 2048, form) / (
            8 * 6.0 * 2048 * 2048 * 1024
        )
        for mode, seconds in projection.items():
            log.info(
                "  %-9s %8.1f ms/step  ratio %.3f",
                mode,
                1e3 * seconds,
                seconds / projection["dense"],
            )

    reprojection = time_reprojection(args.preset, form, args.repeats)
    result["reprojection_s"] = reprojection
    result["reprojection_share"] = reprojection["batched_s"] / (
        reprojection["batched_s"] + 128 * times["optimized"]
    )
    log.info(
        "re-projection: batched %.1f ms, per layer %.1f ms, share at every 128 steps %.4f%%",
        1e3 * reprojection["batched_s"],
        1e3 * reprojection["per_layer_s"],
        100 * result["reprojection_share"],
    )

    if not args.skip_harness:
        harness = harness_throughput_ratio(args.preset, form, steps=8)
        result["harness"] = harness
        result["harness_throughput_ratio"] = harness["ratio"]
        log.info("harness / minimal loop throughput: %.3f", harness["ratio"])

    memory = measure_peak_rss(args.preset, form, steps=3)
    result["memory"] = memory
    result["peak_rss_ratio"] = memory["ratio"]
    log.info(
        "peak RSS decomposed / dense: %.3f; above the imports: %.3f (bound %.3f)",
        memory["ratio"],
        memory["training_ratio"],
        memory["training_bound_ratio"],
    )

    if args.json:
        print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

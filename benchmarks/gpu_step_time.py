"""GPU step-time ratio at the Llama-3.2-1B preset in bf16, and the batched re-projection time.

    python benchmarks/gpu_step_time.py [--json]         # one CUDA GPU, under 5 minutes (estimate)
    python benchmarks/gpu_step_time.py --device cpu --preset llama3-tiny --context 64   # dry run

Dense, naive decomposed and optimized decomposed (WeightAccumulator) training steps at
micro-batch 1 x accumulation 8, context 1024, bf16 autocast with fp32 master weights and
AdamW, alternated, warm-up excluded, median of the repeats. Then one batched re-projection of
every attention projection (one batched fp32 SVD per group of same-shape layers) against a
per-layer loop. All three models stay in memory together (about 3 x 20 GB at 1B parameters).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import overparam  # noqa: E402
from overparam.llm.presets import get_preset  # noqa: E402
from step_time import Stepper, build_llama, make_batches  # noqa: E402


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="llama3.2-1b")
    parser.add_argument("--parameterization", default="SvecVD")
    parser.add_argument("--context", type=int, default=1024, help="tokens per sequence")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per mode (median)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.backends.cuda.matmul.allow_tf32 = True
    preset = get_preset(args.preset)
    form = overparam.resolve_parameterization(args.parameterization)
    batches = [b.to(device) for b in make_batches(preset.vocab_size, 8, 1, args.context)]

    def loss_fn(model, input_ids):
        with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            return model(input_ids, labels=input_ids).loss

    steppers = {}
    for mode, name in (("dense", "dense"), ("naive", form), ("optimized", form)):
        model = build_llama(args.preset, name).to(device)
        steppers[mode] = Stepper(model, batches, loss_fn, accumulate=mode == "optimized")

    for stepper in steppers.values():  # warm-up: kernels, allocator, optimizer state
        stepper.step()
        stepper.step()
    samples: dict[str, list[float]] = {mode: [] for mode in steppers}
    for _ in range(args.repeats):
        for mode, stepper in steppers.items():
            synchronize(device)
            start = time.perf_counter()
            stepper.step()
            synchronize(device)
            samples[mode].append(time.perf_counter() - start)
    times = {mode: statistics.median(values) for mode, values in samples.items()}

    model = steppers["optimized"].model
    layers = list(overparam.decomposed_layers(model).values())
    batched, per_layer = [], []
    for _ in range(3):
        synchronize(device)
        start = time.perf_counter()
        overparam.reproject(model)
        synchronize(device)
        batched.append(time.perf_counter() - start)
        start = time.perf_counter()
        for layer in layers:
            layer.reproject()
        synchronize(device)
        per_layer.append(time.perf_counter() - start)

    result = {
        "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.machine(),
        "torch": torch.__version__,
        "preset": args.preset,
        "parameterization": form,
        "context": args.context,
        "step_time_s": times,
        "step_time_ratio_naive": times["naive"] / times["dense"],
        "step_time_ratio_optimized": times["optimized"] / times["dense"],
        "reprojection_batched_s": statistics.median(batched),
        "reprojection_per_layer_s": statistics.median(per_layer),
        "reprojection_share": statistics.median(batched)
        / (statistics.median(batched) + 128 * times["optimized"]),
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda"
        else None,
    }
    for mode, seconds in times.items():
        print(f"{mode:10s} {1e3 * seconds:9.1f} ms/step  ratio {seconds / times['dense']:.3f}")
    print(
        f"re-projection: batched {1e3 * result['reprojection_batched_s']:.1f} ms, per layer "
        f"{1e3 * result['reprojection_per_layer_s']:.1f} ms, share at every 128 steps "
        f"{100 * result['reprojection_share']:.3f}%"
    )
    if args.json:
        print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

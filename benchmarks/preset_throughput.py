"""Training throughput of each model preset on this machine, in tokens per second.

    python benchmarks/preset_throughput.py [--presets llama3-tiny,llama3-small,llama3.2-1b]

For ``llama3-tiny`` and ``llama3-small``: full dense optimizer steps (micro-batch 1 x
accumulation 8 at the preset's context, AdamW), median over the timed steps after one
warm-up step. For ``llama3.2-1b``: one forward and backward pass of a single 1024-token
sequence, without the optimizer step, because AdamW's state (about 20 GB in fp32) does not
fit next to the model on a 24 GB machine. Its figure is therefore an upper bound of the
training throughput.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from transformers import LlamaForCausalLM

from overparam.llm.presets import get_preset

STEPPED = ("llama3-tiny", "llama3-small")


def stepped_throughput(preset_name: str, steps: int) -> dict[str, float]:
    preset = get_preset(preset_name)
    torch.manual_seed(0)
    model = LlamaForCausalLM(preset.llama_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    generator = torch.Generator().manual_seed(1)
    batches = [
        torch.randint(0, preset.vocab_size, (1, preset.context_length), generator=generator)
        for _ in range(8)
    ]
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        for input_ids in batches:
            (model(input_ids, labels=input_ids).loss / len(batches)).backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times[1:])
    tokens = 8 * preset.context_length
    return {"step_s": step_s, "tokens_per_step": tokens, "tokens_per_s": tokens / step_s}


def forward_backward_throughput(preset_name: str, tokens: int) -> dict[str, float]:
    preset = get_preset(preset_name)
    torch.manual_seed(0)
    model = LlamaForCausalLM(preset.llama_config())
    input_ids = torch.randint(0, preset.vocab_size, (1, tokens))
    start = time.perf_counter()
    model(input_ids, labels=input_ids).loss.backward()
    seconds = time.perf_counter() - start
    return {"forward_backward_s": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", default="llama3-tiny,llama3-small,llama3.2-1b")
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps per preset")
    args = parser.parse_args(argv)

    results = {"date": time.strftime("%Y-%m-%d"), "torch_threads": torch.get_num_threads()}
    for name in args.presets.split(","):
        preset = get_preset(name)
        if name in STEPPED:
            figures = stepped_throughput(name, args.steps)
        else:
            figures = forward_backward_throughput(name, min(1024, preset.context_length))
        figures["parameters"] = preset.num_parameters()
        results[name] = figures
        print(f"{name}: {figures['tokens_per_s']:.0f} tokens/s", flush=True)
    print(json.dumps(results, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

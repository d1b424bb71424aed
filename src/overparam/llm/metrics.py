"""Metric sinks of a run: metrics.jsonl, one console line per interval, tqdm, TensorBoard.

Every sink receives the same dict. Keys carry their unit: `loss/train`, `loss/eval` (mean
cross-entropy per token, nats), `lr`, `grad_norm` (global L2 norm before clipping),
`time/step(ms)`, `throughput(tokens/s)`, `drift/...` (overparam.summarize_diagnostics). Event
records carry an `event` key instead (reproject, checkpoint, diverged, ...). Every record has
`step`, the number of optimizer steps done.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("overparam.llm.train")

METRICS_FILE = "metrics.jsonl"
NO_PROGRESS_ENV = "OVERPARAM_NO_PROGRESS"


class MetricSink(Protocol):
    def write(self, record: dict[str, Any]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """metrics.jsonl, one JSON object per line, written in batches by flush()."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._buffer: list[str] = []

    def write(self, record: dict[str, Any]) -> None:
        self._buffer.append(json.dumps(record))

    def flush(self) -> None:
        if not self._buffer:
            return
        with self.path.open("a", encoding="utf-8") as stream:
            stream.write("\n".join(self._buffer) + "\n")
        self._buffer = []

    def close(self) -> None:
        self.flush()


def truncate_metrics(path: Path, last_step: int) -> int:
    """Drop the records of steps after `last_step` from a metrics file; return how many.

    A resumed run calls this with its checkpoint's step before appending, so no step's
    records appear twice. The file is rewritten through a temporary file and
    os.replace, so a crash leaves either the old or the new content.
    """
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            step = json.loads(line).get("step", 0)
        except json.JSONDecodeError:
            dropped += 1  # a line cut by a crash mid-write
            continue
        if step <= last_step:
            kept.append(line)
        else:
            dropped += 1
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as stream:
        stream.write("".join(line + "\n" for line in kept))
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)
    return dropped


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        if value != 0.0 and math.isfinite(value) and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


class ConsoleSink:
    """One `logging` line per record, skipping the per-layer diagnostics dict."""

    def __init__(self, max_steps: int) -> None:
        self.max_steps = max_steps

    def write(self, record: dict[str, Any]) -> None:
        fields = [f"step {record.get('step', 0)}/{self.max_steps}"]
        for key, value in record.items():
            if key in ("step", "diagnostics"):
                continue
            fields.append(f"{key} {_format_value(value)}")
        log.info(" | ".join(fields))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class ProgressSink:
    """A tqdm bar over optimizer steps; off when stderr is not a terminal or when
    OVERPARAM_NO_PROGRESS=1."""

    def __init__(self, max_steps: int, start_step: int) -> None:
        self.bar = None
        if os.environ.get(NO_PROGRESS_ENV) == "1" or not sys.stderr.isatty():
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=max_steps, initial=start_step, unit="step", dynamic_ncols=True)
        self._step = start_step

    def write(self, record: dict[str, Any]) -> None:
        if self.bar is None:
            return
        step = int(record.get("step", self._step))
        if step > self._step:
            self.bar.update(step - self._step)
            self._step = step
        if "loss/train" in record:
            self.bar.set_postfix(loss=f"{record['loss/train']:.3f}", refresh=False)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class TensorBoardSink:
    """Scalar values of each record under its key, at global step `step`."""

    def __init__(self, log_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is an optional dependency
            log.warning("train.tensorboard is on but tensorboard is not installed; skipping it")
            self.writer = None
            return
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def write(self, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        step = int(record.get("step", 0))
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class MetricSinks:
    """Fan-out of each record to every sink."""

    def __init__(self, sinks: list[MetricSink]) -> None:
        self.sinks = sinks

    def write(self, record: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.write(record)

    def flush(self) -> None:
        for sink in self.sinks:
            sink.flush()

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

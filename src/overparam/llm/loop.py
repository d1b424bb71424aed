"""The optimizer-step loop of a run: train, log, re-project, evaluate, checkpoint, stop.

Each step makes one host sync: loss, gradient norm and the all-reduced flags are read in
one `.tolist()`. Diagnostics run every train.diagnostics_every_steps steps, and metric
records are buffered until the next log interval or checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import overparam
from overparam.errors import DecompositionError
from overparam.llm.checkpoint import save_checkpoint
from overparam.llm.config import RunConfig
from overparam.llm.data import TokenBatches
from overparam.llm.distributed import DistributedContext
from overparam.llm.divergence import DivergenceMonitor
from overparam.llm.metrics import MetricSinks
from overparam.llm.signals import StopRequest
from overparam.llm.step import compute_gradients, evaluate, gradient_norm

log = logging.getLogger("overparam.llm.train")

StepHook = Callable[[int, nn.Module], None]


@dataclass
class TrainingHooks:
    """Callbacks for tests and experiments, each called with (step, model).

    `before_step` runs before the forward passes of step `step` (1-based), and
    `after_optimizer_step` right after optimizer.step(), before re-projection.
    """

    before_step: StepHook | None = None
    after_optimizer_step: StepHook | None = None


@dataclass
class Progress:
    """Progress of a run, saved in every checkpoint so that a resumed run continues exactly."""

    step: int = 0  # optimizer steps done
    tokens: int = 0  # input tokens trained on, all processes
    reference_loss: float | None = None  # first step's training loss, for divergence
    initial_eval_loss: float | None = None
    best_eval_loss: float | None = None
    last_eval_loss: float | None = None
    wall_time_s: float = 0.0  # time spent in the loop, summed over resumed segments

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Progress:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in names})


@dataclass
class LoopResult:
    status: str  # completed, diverged or interrupted
    reason: str | None = None
    diverged_step: int | None = None
    signal_name: str | None = None


class TrainingLoop:
    """State of a running training loop; `run()` trains until max_steps, divergence or a stop."""

    def __init__(
        self,
        *,
        config: RunConfig,
        run_dir: Path,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        train_batches: TokenBatches,
        eval_batches: list[tuple[torch.Tensor, torch.Tensor]],
        context: DistributedContext,
        precision: str,
        sinks: MetricSinks,
        progress: Progress,
        hooks: TrainingHooks,
        stop: StopRequest,
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.train_batches = train_batches
        self.eval_batches = eval_batches
        self.context = context
        self.precision = precision
        self.sinks = sinks
        self.progress = progress
        self.hooks = hooks
        self.stop = stop

        decomposition = config.decomposition
        self.has_decomposed_layers = bool(overparam.decomposed_layers(model))
        self.accumulator = None
        if decomposition.accumulate_weights and self.has_decomposed_layers:
            self.accumulator = overparam.WeightAccumulator(model)
        self.monitor = DivergenceMonitor(
            config.train.loss_divergence_margin, progress.reference_loss
        )
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        train = config.train
        self.tokens_per_step = (
            train.micro_batch_size
            * train.grad_accum_steps
            * context.world_size
            * config.context_length
        )

        # Sums over the current log interval, for time/step and throughput.
        self._interval_steps = 0
        self._interval_seconds = 0.0

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> LoopResult:
        train = self.config.train
        if (
            self.progress.step == 0
            and self.eval_batches
            and self.progress.initial_eval_loss is None
        ):
            self.progress.initial_eval_loss = self._evaluate(step=0)

        loop_start = time.perf_counter()
        wall_time_before = self.progress.wall_time_s
        try:
            for step in range(self.progress.step + 1, train.max_steps + 1):
                result = self._train_step(step)
                self.progress.wall_time_s = wall_time_before + time.perf_counter() - loop_start
                if result is not None:
                    return result
        finally:
            self.progress.wall_time_s = wall_time_before + time.perf_counter() - loop_start
            self.sinks.flush()
        return LoopResult("completed")

    def _train_step(self, step: int) -> LoopResult | None:
        """Run optimizer step `step` and what is due after it; a result ends the loop."""
        train = self.config.train
        if self.hooks.before_step is not None:
            self.hooks.before_step(step, self.model)
        start = time.perf_counter()

        # Gradients of the global batch, then the one host sync of the step.
        micro_batches = self._micro_batches(step)
        self.optimizer.zero_grad(set_to_none=True)
        grads = compute_gradients(
            self.model,
            micro_batches,
            accumulator=self.accumulator,
            context=self.context,
            precision=self.precision,
            stop_requested=self.stop.requested,
        )
        norm = gradient_norm(self.parameters, self.config.optim.grad_clip_norm)
        scalars = torch.stack([grads.loss, grads.nonfinite_flag, grads.stop_flag, norm.float()])
        loss, nonfinite, stop_flag, grad_norm = scalars.tolist()

        # Divergence is decided before the update, from values every process shares.
        reason = self.monitor.check(loss, grad_norm, nonfinite > 0)
        if reason is not None:
            return self._diverged(step, reason)
        self.progress.reference_loss = self.monitor.reference_loss

        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        if self.hooks.after_optimizer_step is not None:
            self.hooks.after_optimizer_step(step, self.model)

        every = self.config.decomposition.reproject_every_steps
        if every > 0 and step % every == 0 and self.has_decomposed_layers:
            try:
                self._reproject(step)
            except DecompositionError as error:
                return self._diverged(step, str(error))

        self.progress.step = step
        self.progress.tokens += self.tokens_per_step
        self._interval_steps += 1
        self._interval_seconds += time.perf_counter() - start

        last = step == train.max_steps
        if step % train.log_every_steps == 0 or last:
            self._log_train(step, loss, lr, grad_norm)
        if train.diagnostics_every_steps and (step % train.diagnostics_every_steps == 0 or last):
            self._log_diagnostics(step)
        if self.eval_batches and (
            last or (train.eval_every_steps and step % train.eval_every_steps == 0)
        ):
            self._evaluate(step)

        stopping = stop_flag > 0 and not last  # a stop during the last step changes nothing
        every = train.checkpoint_every_steps
        if last or stopping or (every and step % every == 0):
            self.save(step)
        if stopping:
            return LoopResult(
                "interrupted",
                reason=f"stopped by {self.stop.signal_name or 'a signal on another process'}",
                signal_name=self.stop.signal_name,
            )
        return None

    def _micro_batches(self, step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        train = self.config.train
        device = self.context.device
        batches = []
        for micro_index in range(train.grad_accum_steps):
            input_ids, labels = self.train_batches.micro_batch(
                step - 1,  # TokenBatches counts steps from 0
                micro_index,
                train.micro_batch_size,
                train.grad_accum_steps,
                self.context.rank,
                self.context.world_size,
            )
            batches.append(
                (input_ids.to(device, non_blocking=True), labels.to(device, non_blocking=True))
            )
        return batches

    # --- what happens after a step ---------------------------------------------------------

    def _reproject(self, step: int) -> None:
        start = time.perf_counter()
        layers = overparam.reproject(
            self.model, self.optimizer, self.config.decomposition.optimizer_state
        )
        if self.context.device.type == "cuda":
            torch.cuda.synchronize(self.context.device)  # so the time covers the SVDs
        milliseconds = (time.perf_counter() - start) * 1000
        self.sinks.write(
            {"step": step, "event": "reproject", "layers": layers, "time(ms)": milliseconds}
        )

    def _log_train(self, step: int, loss: float, lr: float, grad_norm: float) -> None:
        seconds = max(self._interval_seconds, 1e-9)
        record = {
            "step": step,
            "tokens": self.progress.tokens,
            "loss/train": loss,
            "lr": lr,
            "grad_norm": grad_norm,
            "time/step(ms)": 1000 * seconds / max(self._interval_steps, 1),
            "throughput(tokens/s)": self.tokens_per_step * self._interval_steps / seconds,
        }
        self._interval_steps = 0
        self._interval_seconds = 0.0
        self.sinks.write(record)
        self.sinks.flush()

    def _log_diagnostics(self, step: int) -> None:
        per_layer = overparam.diagnostics(self.model)
        if not per_layer:
            return
        record: dict[str, Any] = {"step": step}
        record.update(overparam.summarize_diagnostics(per_layer))
        record["diagnostics"] = per_layer
        self.sinks.write(record)

    def _evaluate(self, step: int) -> float:
        start = time.perf_counter()
        loss = evaluate(
            self.model, self.eval_batches, context=self.context, precision=self.precision
        )
        milliseconds = (time.perf_counter() - start) * 1000
        progress = self.progress
        progress.last_eval_loss = loss
        if progress.best_eval_loss is None or loss < progress.best_eval_loss:
            progress.best_eval_loss = loss
        self.sinks.write(
            {
                "step": step,
                "tokens": progress.tokens,
                "loss/eval": loss,
                "time/eval(ms)": milliseconds,
            }
        )
        return loss

    def _diverged(self, step: int, reason: str) -> LoopResult:
        log.warning("run diverged at step %d: %s", step, reason)
        self.sinks.write({"step": step, "event": "diverged", "reason": reason})
        if self.accumulator is not None:
            self.accumulator.discard()
        return LoopResult("diverged", reason=reason, diverged_step=step)

    def save(self, step: int) -> None:
        """Flush the metrics, then write the checkpoint of `step` (rank 0 only)."""
        self.sinks.flush()
        if not self.context.is_main:
            return
        start = time.perf_counter()
        path = save_checkpoint(
            self.run_dir,
            step,
            self.model,
            self.training_state(),
            self.config.train.keep_checkpoints,
        )
        milliseconds = (time.perf_counter() - start) * 1000
        self.sinks.write(
            {"step": step, "event": "checkpoint", "path": path.name, "time(ms)": milliseconds}
        )
        self.sinks.flush()

    def training_state(self) -> dict[str, Any]:
        """Everything besides the weights that a resumed run needs to continue bit for bit."""
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng,
            "progress": self.progress.to_dict(),
            "world_size": self.context.world_size,
        }

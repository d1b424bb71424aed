"""`run_training`: validate, build, lock the run directory, resume, train, write the summary.

Order of work, so that an invalid run touches nothing:

1. Validate what needs the model or the data: target patterns (on a weightless model),
   the run directory (writable, not an earlier run unless resuming), the corpus, the
   tokenizer's vocabulary against the model's, the context length.
2. Create and lock the run directory (RunLockedError, exit code 4, when another process
   holds it), refuse to overwrite an existing run unless resuming.
3. Build the model and optimizer, load the newest valid checkpoint when resuming.
4. Train (overparam.llm.loop), then write summary.json with the status.

Only rank 0 writes files. Every process validates and trains the same way.
"""

from __future__ import annotations

import json
import logging
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

import overparam
from overparam.errors import (
    CheckpointError,
    ConfigError,
    OverparamError,
    RunInterrupted,
    RunLockedError,
)
from overparam.llm.checkpoint import (
    Checkpoint,
    apply_model_state,
    load_checkpoint,
    load_latest_checkpoint,
)
from overparam.llm.config import RUN_INFO_KEY, RunConfig
from overparam.llm.data import PreparedData, TokenBatches, prepare_data
from overparam.llm.distributed import (
    DistributedContext,
    barrier,
    broadcast_object,
    init_distributed,
    shutdown,
)
from overparam.llm.loop import LoopResult, Progress, TrainingHooks, TrainingLoop
from overparam.llm.metrics import (
    METRICS_FILE,
    ConsoleSink,
    JsonlSink,
    MetricSinks,
    ProgressSink,
    TensorBoardSink,
    truncate_metrics,
)
from overparam.llm.model import BuiltModel, build_model, check_targets, model_config
from overparam.llm.optim import build_optimizer, build_scheduler
from overparam.llm.rundir import (
    CONFIG_FILE,
    SUMMARY_FILE,
    RunLock,
    check_run_dir,
    has_run,
    read_json,
    write_json_atomic,
)
from overparam.llm.signals import StopRequest

log = logging.getLogger("overparam.llm.train")

# Config keys that may differ between a run and its resumption: they change how the run is
# observed or how long it lasts, not the result of the steps already taken.
RESUMABLE_CHANGES = frozenset(
    {
        "train.max_steps",
        "train.log_every_steps",
        "train.eval_every_steps",
        "train.diagnostics_every_steps",
        "train.checkpoint_every_steps",
        "train.keep_checkpoints",
        "train.threads",
        "train.tensorboard",
        "train.device",
        "data.cache_dir",
    }
)

__all__ = ["TrainingHooks", "run_training"]


def run_training(
    config: RunConfig,
    out_dir: str | Path,
    resume: bool = False,
    *,
    hooks: TrainingHooks | None = None,
) -> dict[str, Any]:
    """Train one run into `out_dir` and return its summary (also saved as summary.json).

    With `resume`, continue from the newest valid checkpoint in `out_dir`, or start fresh
    when it has none. A completed or diverged run is returned as it is. Raises ConfigError
    or DataError before creating anything, RunLockedError when another process holds the
    directory, and RunInterrupted after saving a checkpoint on SIGTERM/SIGINT. A diverged
    run is a result, not an error: its status is "diverged".
    """
    context = init_distributed(config.train.device)
    if not context.is_main:
        logging.getLogger("overparam").setLevel(logging.WARNING)  # one console per run
    try:
        return _run(config, Path(out_dir), resume, hooks or TrainingHooks(), context)
    finally:
        shutdown(context)


def _run(
    config: RunConfig,
    out_dir: Path,
    resume: bool,
    hooks: TrainingHooks,
    context: DistributedContext,
) -> dict[str, Any]:
    if config.train.threads > 0:
        torch.set_num_threads(config.train.threads)
    precision = resolve_precision(config.train.precision, context.device)

    # 1. Validation that needs the model skeleton and the data; nothing is written yet.
    check_targets(config, model_config(config, vocab_size=None))
    check_run_dir(out_dir, resume)
    prepared = prepare_data(config.data, config.context_length)
    hf_config = model_config(config, prepared.vocab_size)

    # 2. The run directory: lock, then decide between a fresh start and a resume.
    # Rank 0 decides and reads the checkpoint; the others read the same checkpoint directory.
    lock = None
    setup_error: OverparamError | None = None
    plan: dict[str, Any] = {}
    checkpoint = None
    if context.is_main:
        try:
            lock = _create_and_lock(out_dir)
            plan, checkpoint = _plan_run(config, out_dir, resume, context)
        except OverparamError as error:
            if lock is not None:
                lock.release()
            setup_error = error
    _share_setup_error(setup_error, context)
    plan = broadcast_object(plan, context)  # type: ignore[assignment]
    try:
        if plan.get("finished_summary") is not None:
            log.info("run in %s already finished; returning its summary", out_dir)
            return plan["finished_summary"]
        if checkpoint is None and plan.get("checkpoint") is not None:
            checkpoint = load_checkpoint(Path(plan["checkpoint"]))
        return _train(config, out_dir, checkpoint, prepared, hf_config, precision, hooks, context)
    finally:
        if lock is not None:
            lock.release()


def _create_and_lock(out_dir: Path) -> RunLock:
    """Create the run directory and take its lock; ConfigError when the disk refuses."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        return RunLock(out_dir).acquire()
    except OSError as error:
        raise ConfigError(
            f"invalid run directory {out_dir} (--out): cannot create it or its lock file "
            f"({error.strerror or error}); choose a writable --out."
        ) from None


def resolve_precision(choice: str, device: torch.device) -> str:
    """Map train.precision to "fp32" or "bf16": auto means bf16 autocast on CUDA only."""
    if choice == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if choice == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            "invalid train.precision = 'bf16': this GPU does not support bfloat16; use fp32."
        )
    return choice


_SHARED_ERRORS: dict[str, type[OverparamError]] = {
    cls.__name__: cls for cls in (ConfigError, RunLockedError, CheckpointError, OverparamError)
}


def _share_setup_error(error: OverparamError | None, context: DistributedContext) -> None:
    """Raise rank 0's setup error on every process, so none waits in a collective."""
    shared = broadcast_object(
        None if error is None else (type(error).__name__, str(error)), context
    )
    if error is not None:
        raise error
    if shared is not None:
        name, message = shared  # type: ignore[misc]
        raise _SHARED_ERRORS.get(name, OverparamError)(message)


def _plan_run(
    config: RunConfig, out_dir: Path, resume: bool, context: DistributedContext
) -> tuple[dict[str, Any], Checkpoint | None]:
    """Decide, on rank 0 and under the lock, how the run starts: fresh, resumed, or done.

    Returns the plan shared with the other processes and the checkpoint to resume from.
    """
    if not resume:
        if has_run(out_dir):
            raise ConfigError(
                f"run directory {out_dir} already contains a run; pass --resume to continue "
                "it, or choose another --out"
            )
        return {"checkpoint": None}, None

    summary = read_json(out_dir / SUMMARY_FILE)
    saved = read_json(out_dir / CONFIG_FILE)
    if saved is not None:
        _check_resumable(saved, config, context)
    finished = summary is not None and (
        summary.get("status") == "diverged"
        or (
            summary.get("status") == "completed"
            and summary.get("steps", 0) >= config.train.max_steps
        )
    )
    if finished:
        return {"finished_summary": summary}, None

    checkpoint = load_latest_checkpoint(out_dir)  # CheckpointError when none is valid
    if checkpoint is None:
        log.info("no checkpoint in %s; starting the run from step 0", out_dir)
        return {"checkpoint": None}, None
    log.info("resuming %s from %s", out_dir, checkpoint.path)
    return {"checkpoint": str(checkpoint.path)}, checkpoint


def _check_resumable(saved: dict[str, Any], config: RunConfig, context: DistributedContext) -> None:
    """Raise ConfigError when `config` changes what the saved run already trained with."""
    saved_info = saved.get(RUN_INFO_KEY, {})
    saved_values = {key: value for key, value in saved.items() if key != RUN_INFO_KEY}
    try:
        previous = RunConfig.from_dict(saved_values).to_dict()
    except ConfigError as error:
        raise ConfigError(f"cannot resume: the saved {CONFIG_FILE} is invalid ({error})") from None
    current = config.to_dict()
    changed = [
        f"{section}.{key}: {previous[section][key]!r} -> {value!r}"
        for section, values in current.items()
        for key, value in values.items()
        if f"{section}.{key}" not in RESUMABLE_CHANGES and previous[section].get(key) != value
    ]
    if changed:
        raise ConfigError(
            "cannot resume with a different configuration: "
            + "; ".join(changed)
            + f". Only these keys may change: {', '.join(sorted(RESUMABLE_CHANGES))}."
        )
    saved_world = saved_info.get("world_size")
    if saved_world is not None and saved_world != context.world_size:
        raise ConfigError(
            f"cannot resume a run of {saved_world} processes with {context.world_size}: the "
            "global batch, and so the data order, would change."
        )


def _train(
    config: RunConfig,
    out_dir: Path,
    checkpoint: Checkpoint | None,
    prepared: PreparedData,
    hf_config: Any,
    precision: str,
    hooks: TrainingHooks,
    context: DistributedContext,
) -> dict[str, Any]:
    # 3. Model, optimizer and, when resuming, the checkpoint's state.
    try:
        built, optimizer, scheduler, progress = _build(
            config, hf_config, prepared, checkpoint, context
        )
        start_step = progress.step
        sinks = MetricSinks([])
        if context.is_main:
            write_json_atomic(
                out_dir / CONFIG_FILE,
                _resolved_config(config, prepared, built, precision, context, start_step),
            )
            _reset_metrics(out_dir / METRICS_FILE, start_step)
            sinks = _make_sinks(config, out_dir, start_step)
    except Exception as error:
        failed = LoopResult("failed", reason=f"{type(error).__name__}: {error}")
        _finish(
            out_dir, config, None, Progress(), failed, context, MetricSinks([]), after_error=True
        )
        raise
    model = built.model

    eval_batches = []
    if config.train.eval_tokens > 0:
        eval_source = TokenBatches(prepared.val_tokens, config.context_length, config.train.seed)
        eval_batches = list(
            eval_source.eval_batches(config.train.eval_tokens, config.train.eval_batch_size)
        )

    # 4. Train, then record how the run ended, also when an exception ends it.
    stop = StopRequest()
    loop = TrainingLoop(
        config=config,
        run_dir=out_dir,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        train_batches=TokenBatches(prepared.train_tokens, config.context_length, config.train.seed),
        eval_batches=eval_batches,
        context=context,
        precision=precision,
        sinks=sinks,
        progress=progress,
        hooks=hooks,
        stop=stop,
    )
    log.info(
        "training %s (%s, %d parameters) for %d steps of %d tokens in %s",
        config.model.init_from or config.model.preset,
        config.decomposition.parameterization,
        built.num_parameters,
        config.train.max_steps,
        loop.tokens_per_step,
        out_dir,
    )
    try:
        with stop:
            result = loop.run()
    except KeyboardInterrupt:
        _finish(
            out_dir,
            config,
            built,
            progress,
            LoopResult("interrupted", reason="second signal: no checkpoint saved"),
            context,
            sinks,
            after_error=True,
        )
        raise
    except Exception as error:
        reason = f"{type(error).__name__}: {error}"
        failed = LoopResult("failed", reason=reason)
        _finish(out_dir, config, built, progress, failed, context, sinks, after_error=True)
        raise

    summary = _finish(out_dir, config, built, progress, result, context, sinks)
    barrier(context)
    if result.status == "interrupted":
        raise RunInterrupted(
            f"{result.reason} after step {progress.step}; checkpoint saved in {out_dir}. "
            "Continue with --resume."
        )
    return summary


def _build(
    config: RunConfig,
    hf_config: Any,
    prepared: PreparedData,
    checkpoint: Checkpoint | None,
    context: DistributedContext,
) -> tuple[BuiltModel, torch.optim.Optimizer, Any, Progress]:
    """Build model, optimizer and scheduler, and load `checkpoint` into them when given."""
    check_tokens = torch.from_numpy(np.asarray(prepared.val_tokens[:64], dtype=np.int64))
    built = build_model(config, hf_config, context.device, check_tokens)
    optimizer = build_optimizer(built.model, config.optim)
    scheduler = build_scheduler(optimizer, config.optim, config.train.max_steps)
    progress = Progress()
    if checkpoint is not None:
        progress = _apply_checkpoint(checkpoint, built.model, optimizer, scheduler)
    return built, optimizer, scheduler, progress


def _reset_metrics(path: Path, start_step: int) -> None:
    """Start metrics.jsonl afresh, or drop the records after the resumed step."""
    if start_step == 0:
        path.unlink(missing_ok=True)
        return
    dropped = truncate_metrics(path, start_step)
    if dropped:
        log.info("dropped %d metric records after step %d", dropped, start_step)


def _apply_checkpoint(
    checkpoint: Checkpoint,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> Progress:
    """Load a checkpoint into the model, optimizer and scheduler, all or nothing."""
    state = checkpoint.training_state
    state_file = checkpoint.path / "training_state.pt"
    try:
        optimizer_state = state["optimizer"]
        scheduler_state = state["scheduler"]
        progress = Progress.from_dict(state["progress"])
        rng = state["rng"]
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"invalid checkpoint file {state_file}: missing {error}") from None

    # Check the optimizer state's shape before touching anything, so a mismatch cannot leave
    # the model loaded and the optimizer not.
    groups = optimizer_state.get("param_groups", [])
    expected = [len(group["params"]) for group in optimizer.param_groups]
    found = [len(group.get("params", [])) for group in groups]
    if found != expected:
        raise CheckpointError(
            f"invalid checkpoint file {state_file}: optimizer groups hold {found} parameters, "
            f"the model's {expected}"
        )
    if progress.step != checkpoint.step:
        raise CheckpointError(
            f"invalid checkpoint file {state_file}: progress step {progress.step} differs from "
            f"the checkpoint's {checkpoint.step}"
        )

    apply_model_state(model, checkpoint.model_state)
    optimizer.load_state_dict(optimizer_state)
    scheduler.load_state_dict(scheduler_state)
    torch.set_rng_state(rng["torch"].cpu())
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
    return progress


def _make_sinks(config: RunConfig, out_dir: Path, start_step: int) -> MetricSinks:
    sinks = [
        JsonlSink(out_dir / METRICS_FILE),
        ConsoleSink(config.train.max_steps),
        ProgressSink(config.train.max_steps, start_step),
    ]
    if config.train.tensorboard:
        sinks.append(TensorBoardSink(out_dir / "tensorboard"))
    return MetricSinks(sinks)


def _library_versions() -> dict[str, str]:
    import safetensors
    import tokenizers
    import transformers

    return {
        "overparam": overparam.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
    }


def _resolved_config(
    config: RunConfig,
    prepared: PreparedData,
    built: BuiltModel,
    precision: str,
    context: DistributedContext,
    start_step: int,
) -> dict[str, Any]:
    """Return config.json: the config's sections plus what this run resolved."""
    train = config.train
    global_batch = train.micro_batch_size * train.grad_accum_steps * context.world_size
    model = built.model
    info = {
        "versions": _library_versions(),
        "world_size": context.world_size,
        "device": context.device.type,
        "precision": precision,
        "context_length": config.context_length,
        "global_batch_size": global_batch,
        "tokens_per_step": global_batch * config.context_length,
        "model_vocab_size": built.vocab_size,
        "tokenizer_vocab_size": prepared.vocab_size,
        "tokenizer_path": prepared.tokenizer_path,
        "eos_token_id": prepared.eos_token_id,
        "data_fingerprint": prepared.fingerprint,
        "num_parameters": built.num_parameters,
        "num_dense_parameters": built.num_dense_parameters,
        "decomposed_layers": built.decomposed_layers,
        "logit_relative_error": built.logit_relative_error,
        "hf_config": json.loads(model.config.to_json_string()),
        "resumed_from_step": start_step if start_step else None,
    }
    return {**config.to_dict(), RUN_INFO_KEY: info}


def _finish(
    out_dir: Path,
    config: RunConfig,
    built: BuiltModel | None,
    progress: Progress,
    result: LoopResult,
    context: DistributedContext,
    sinks: MetricSinks,
    after_error: bool = False,
) -> dict[str, Any]:
    """Write summary.json (rank 0), close the sinks and return the summary.

    With `after_error`, an OSError while writing (a full disk, say) is logged and not raised,
    so that the error that ended the run is the one raised to the caller.
    """
    summary: dict[str, Any] = {
        "status": result.status,
        "steps": progress.step,
        "tokens": progress.tokens,
        "final_eval_loss": progress.last_eval_loss if result.status == "completed" else None,
        "best_eval_loss": progress.best_eval_loss,
        "initial_eval_loss": progress.initial_eval_loss,
        "wall_time_s": progress.wall_time_s,
        "parameterization": config.decomposition.parameterization,
        "preset": config.model.preset,
        "init_from": config.model.init_from,
        "seed": config.train.seed,
        "num_parameters": None if built is None else built.num_parameters,
        "logit_relative_error": None if built is None else built.logit_relative_error,
    }
    if result.status != "completed":
        summary["reason"] = result.reason
    if result.status == "diverged":
        summary["diverged_step"] = result.diverged_step
    if context.is_main:
        try:
            sinks.close()
            write_json_atomic(out_dir / SUMMARY_FILE, summary)
        except OSError as error:
            if not after_error:
                raise
            log.error("could not record the %s run in %s: %s", result.status, out_dir, error)
            return summary
        log.info(
            "run %s: %d steps, final eval loss %s, summary in %s",
            result.status,
            progress.step,
            summary["final_eval_loss"],
            out_dir / SUMMARY_FILE,
        )
    return summary

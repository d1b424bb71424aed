"""Run a sweep: resolve each cell's config, skip finished runs, launch the rest, record outcomes."""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from overparam.errors import EXIT_INTERRUPTED, EXIT_LOCKED, EXIT_OK, ConfigError
from overparam.sweep.config import SweepConfig
from overparam.sweep.grid import Cell, expand_grid
from overparam.sweep.launch import (
    LaunchSpec,
    available_cores,
    devices_for_slot,
    threads_per_process,
)
from overparam.sweep.local import run_local
from overparam.sweep.progress import SweepProgress
from overparam.sweep.slurm import run_slurm
from overparam.sweep.state import (
    DONE,
    FAILED,
    PENDING,
    SweepState,
    check_writable,
    write_atomic,
)

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    """Outcome of every cell after this invocation."""

    out_dir: Path
    outcomes: dict[str, str] = field(default_factory=dict)  # cell path -> outcome
    interrupted: bool = False

    def count(self, outcome: str) -> int:
        return sum(value == outcome for value in self.outcomes.values())

    @property
    def counts(self) -> Counter[str]:
        return Counter(self.outcomes.values())


def resolve_cell_config(base: dict[str, Any], cell: Cell, threads: int) -> dict[str, Any]:
    """Resolve the full RunConfig dict of one cell; the harness's RunConfig validates it."""
    from overparam.llm.config import RunConfig  # imports transformers: only when needed

    overrides = cell.overrides() | {"train.threads": threads}
    try:
        return RunConfig.from_dict(base).with_overrides(overrides).to_dict()
    except ConfigError as error:
        raise ConfigError(f"invalid sweep config for run {cell.path}: {error}") from None


def check_cell_targets(configs: dict[Cell, dict[str, Any]]) -> None:
    """Resolve each distinct model's target patterns on a weightless model; ConfigError if not.

    Each run checks them too, but only after its process started: a typo would fail every
    run of the sweep one by one instead of the sweep at once.
    """
    from overparam.llm.config import RunConfig
    from overparam.llm.model import check_targets, model_config

    checked: set[str] = set()
    for cell, resolved in configs.items():
        key = json.dumps([resolved["model"], resolved["decomposition"]["targets"]], sort_keys=True)
        if key in checked:
            continue
        checked.add(key)
        run_config = RunConfig.from_dict(resolved)
        try:
            check_targets(run_config, model_config(run_config, vocab_size=None))
        except ConfigError as error:
            raise ConfigError(f"invalid sweep config for run {cell.path}: {error}") from None


def _workers_and_threads(config: SweepConfig, executor: str) -> tuple[int, int]:
    launch = config.launch
    if executor == "slurm":
        return 1, max(1, config.slurm.cpus_per_task // launch.nproc_per_run)
    cores = available_cores()
    workers = launch.workers or max(1, cores // launch.nproc_per_run)
    if workers * launch.nproc_per_run > cores:
        log.warning(
            "%d workers x %d processes exceed the %d available cores; runs will be slower "
            "than with fewer workers",
            workers,
            launch.nproc_per_run,
            cores,
        )
    return workers, threads_per_process(workers, launch.nproc_per_run, cores)


class _Recorder:
    """Turns a finished training process into an outcome and records failures."""

    def __init__(self, state: SweepState, progress: SweepProgress, result: SweepResult) -> None:
        self.state, self.progress, self.result = state, progress, result

    def started(self, cell: Cell) -> None:
        self.progress.started()

    def ended(self, cell: Cell, exit_code: int, duration_s: float, stopping: bool) -> None:
        outcome = self.classify(cell, exit_code, stopping)
        self.result.outcomes[cell.path] = outcome
        self.progress.ended(outcome, duration_s)
        if outcome == "failed":
            log.error(
                "run %s failed (exit code %d); log: %s",
                cell.path,
                exit_code,
                self.state.log_path(cell),
            )
        elif outcome == "taken":
            log.warning(
                "run %s is locked by another process (another sweep?); moving on", cell.path
            )

    def classify(self, cell: Cell, exit_code: int, stopping: bool) -> str:
        summary = self.state.summary(cell) or {}
        status = summary.get("status")
        if exit_code == EXIT_OK and status in ("completed", "diverged"):
            return str(status)
        if exit_code == EXIT_LOCKED:
            return "taken"
        if exit_code == EXIT_INTERRUPTED or (stopping and exit_code < 0):
            return "interrupted"  # resumable: a rerun continues from the last checkpoint

        # A failure the harness could not record (killed, crashed, or no summary written).
        if status != "failed":
            if exit_code < 0:
                reason = f"training process killed by signal {-exit_code}"
            else:
                reason = f"training process exited with code {exit_code} (status {status})"
            self.state.record_failure(cell, f"{reason}; see {self.state.log_path(cell)}", exit_code)
        return "failed"


def run_sweep(
    config: SweepConfig,
    out_dir: Path,
    *,
    workers: int | None = None,
    executor: str | None = None,
    retry_failed: bool = False,
    submitit_cluster: str | None = None,
) -> SweepResult:
    """Run every unfinished cell of the sweep into out_dir and return each cell's outcome.

    Finished (completed or diverged) runs are skipped; killed or interrupted runs resume from
    their last checkpoint; failed runs stay failed unless `retry_failed`. `submitit_cluster`
    forces submitit's executor ("local" in tests); None lets submitit detect Slurm.
    """
    out_dir = Path(out_dir).resolve()
    launch = config.launch
    if workers is not None:
        launch = replace(launch, workers=workers)
    if executor is not None:
        launch = replace(launch, executor=executor)
    config = replace(config, launch=launch)
    if launch.executor == "slurm" and submitit_cluster is None and shutil.which("sbatch") is None:
        raise ConfigError(
            "executor 'slurm' needs a Slurm cluster (sbatch not found on PATH); run on a "
            "cluster login node, or use --executor local"
        )
    # Resolve and check every cell before creating anything, so a bad value costs nothing.
    n_workers, threads = _workers_and_threads(config, launch.executor)
    cells = expand_grid(config)
    configs = {cell: resolve_cell_config(config.base, cell, threads) for cell in cells}
    check_cell_targets(configs)
    check_writable(out_dir)
    state = SweepState(out_dir)
    for cell in cells:
        state.check_config(cell, configs[cell])
    state.update_manifest(config.name, list(configs.items()))
    # The sweep's own config, so `overparam sweep --config OUT/_sweep/sweep.json` reruns it.
    write_atomic(state.state_dir / "sweep.json", json.dumps(config.to_dict(), indent=1) + "\n")

    result = SweepResult(out_dir)
    jobs = []
    for cell in cells:
        cell_state = state.cell_state(cell)
        if cell_state == FAILED and retry_failed:
            log.info("retrying failed run %s", cell.path)
            state.move_failed_aside(cell)
            cell_state = PENDING
        if cell_state == DONE:
            result.outcomes[cell.path] = str((state.summary(cell) or {}).get("status"))
            continue
        if cell_state == FAILED:
            result.outcomes[cell.path] = "failed"
            continue
        spec = LaunchSpec(
            config_path=state.write_config(cell, configs[cell]),
            run_dir=state.run_dir(cell),
            log_path=state.log_path(cell),
            # Always --resume: the harness then starts a new run from step 0, continues a
            # killed one, or returns the summary of a run that another sweep finished since.
            resume=True,
            nproc_per_run=launch.nproc_per_run,
            threads=threads,
        )
        jobs.append((cell, spec))

    previously_failed = result.count("failed")
    if previously_failed:
        log.warning(
            "%d runs failed earlier and are not rerun (use --retry-failed); see %s",
            previously_failed,
            state.state_dir / "outcomes",
        )
    log.info(
        "sweep %s: %d runs in the grid, %d to run with %s, %d thread(s) per process",
        config.name,
        len(cells),
        len(jobs),
        f"{n_workers} local workers" if launch.executor == "local" else "Slurm (submitit)",
        threads,
    )
    progress = SweepProgress(config.name, len(jobs), len(cells) - len(jobs), n_workers)
    recorder = _Recorder(state, progress, result)
    try:
        if not jobs:
            pass
        elif launch.executor == "local":

            def for_slot(cell: Cell, spec: LaunchSpec, slot: int) -> LaunchSpec:
                return replace(spec, cuda_devices=devices_for_slot(slot, launch.gpus_per_worker))

            result.interrupted = run_local(
                jobs, n_workers, for_slot, recorder.started, recorder.ended
            )
        else:
            result.interrupted = run_slurm(
                jobs,
                config.slurm,
                state.state_dir / "submitit",
                f"overparam-{config.name}",
                recorder.started,
                recorder.ended,
                cluster=submitit_cluster,
            )
    finally:
        progress.close()
    for cell, _ in jobs:
        result.outcomes.setdefault(cell.path, "interrupted")
    log.info("sweep %s finished: %s", config.name, dict(sorted(result.counts.items())))
    return result

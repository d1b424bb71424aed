"""Run cells as a Slurm job array through submitit; each job runs one `overparam train`.

The job runs the same command line as the local executor, so the harness's checkpointing,
run lock and exit codes work the same on a cluster. `cluster="local"` uses submitit's local
executor, which the tests use in place of a Slurm cluster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from overparam.errors import EXIT_FAILED
from overparam.sweep.config import SlurmConfig
from overparam.sweep.grid import Cell
from overparam.sweep.launch import LaunchSpec
from overparam.sweep.local import start_process

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 1.0


def run_spec(spec: LaunchSpec) -> int:
    """Job body: run one training command and return its exit code."""
    process = start_process(spec)
    return process.wait()


def executor_parameters(slurm: SlurmConfig, job_name: str) -> dict[str, object]:
    """submitit AutoExecutor parameters; `slurm_` ones apply only on a Slurm cluster."""
    parameters: dict[str, object] = {
        "name": job_name,
        "timeout_min": slurm.time_limit_minutes,
        "nodes": 1,
        "tasks_per_node": 1,  # torchrun, when used, starts the run's processes itself
        "cpus_per_task": slurm.cpus_per_task,
        "gpus_per_node": slurm.gpus_per_run,
        "slurm_array_parallelism": slurm.array_parallelism,
    }
    if slurm.partition:
        parameters["slurm_partition"] = slurm.partition
    if slurm.account:
        parameters["slurm_account"] = slurm.account
    if slurm.mem_gb:
        parameters["mem_gb"] = slurm.mem_gb
    return parameters


def run_slurm(
    jobs: list[tuple[Cell, LaunchSpec]],
    slurm: SlurmConfig,
    folder: Path,
    job_name: str,
    on_start: Callable[[Cell], None],
    on_end: Callable[[Cell, int, float, bool], None],
    cluster: str | None = None,
) -> bool:
    """Submit one array job per cell and wait for all; return True when interrupted (Ctrl-C).

    On Ctrl-C the jobs keep running on the cluster; a rerun of the sweep skips what they
    finished and resumes the rest.
    """
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    executor.update_parameters(**executor_parameters(slurm, job_name))
    specs = [spec for _, spec in jobs]
    submitted = executor.map_array(run_spec, specs)
    log.info(
        "submitted %d jobs (%s executor), logs in %s", len(submitted), executor.cluster, folder
    )
    started = time.monotonic()
    for cell, _ in jobs:
        on_start(cell)

    waiting = dict(zip(submitted, [cell for cell, _ in jobs], strict=True))
    try:
        while waiting:
            time.sleep(POLL_INTERVAL_S)
            for job in [job for job in waiting if job.done()]:
                cell = waiting.pop(job)
                try:
                    exit_code = int(job.result())
                except Exception as error:  # noqa: BLE001 - any job failure is this run's failure
                    log.error("job %s of run %s failed: %s", job.job_id, cell.path, error)
                    exit_code = EXIT_FAILED
                # NOTE: a job's duration is counted from submission, queueing included, so the
                # progress estimate of the time left is pessimistic on a busy cluster.
                on_end(cell, exit_code, time.monotonic() - started, False)
    except KeyboardInterrupt:
        log.warning("stopped waiting; %d jobs keep running under %s", len(waiting), folder)
        return True
    return False

"""Command line and environment of one cell's training process."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

# Variables that set the thread pools of torch's CPU backends (OpenMP, MKL, OpenBLAS).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask, so containers and taskset count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_process(workers: int, nproc_per_run: int, cores: int | None = None) -> int:
    """Torch threads per training process, so that all workers together fill the cores once."""
    cores = available_cores() if cores is None else cores
    return max(1, cores // max(1, workers * nproc_per_run))


def devices_for_slot(slot: int, gpus_per_worker: int) -> str | None:
    """CUDA_VISIBLE_DEVICES of a local worker slot: its own block of GPUs, None for no GPUs."""
    if gpus_per_worker == 0:
        return None
    return ",".join(str(slot * gpus_per_worker + i) for i in range(gpus_per_worker))


@dataclass(frozen=True)
class LaunchSpec:
    """Everything needed to start one cell's training; picklable for submitit jobs."""

    config_path: Path
    run_dir: Path
    log_path: Path
    resume: bool
    nproc_per_run: int = 1
    threads: int = 1
    cuda_devices: str | None = None  # CUDA_VISIBLE_DEVICES for the run; None leaves it as is

    def command(self) -> list[str]:
        train = ["-m", "overparam", "train", "--config", str(self.config_path)]
        train += ["--out", str(self.run_dir)] + (["--resume"] if self.resume else [])
        if self.nproc_per_run == 1:
            return [sys.executable, *train]
        # torchrun as a module of this interpreter; --standalone picks a free rendezvous port,
        # so several multi-process runs can share one machine.
        torchrun = ["-m", "torch.distributed.run", "--standalone"]
        torchrun.append(f"--nproc_per_node={self.nproc_per_run}")
        return [sys.executable, *torchrun, *train]

    def environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        for name in THREAD_VARIABLES:
            env[name] = str(self.threads)
        if self.cuda_devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.cuda_devices
        return env

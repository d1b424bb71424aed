"""Crash-safe checkpoints: model weights in safetensors, the rest in a weights-only torch file.

Layout of a run directory's checkpoints::

    checkpoints/
      step-00000100/
        model.safetensors     model weights (tied weights stored once)
        training_state.pt     optimizer, scheduler, RNG states, step and run progress
        manifest.json         step, and the size and SHA-256 of both files (written last)
      step-00000200/ ...

A checkpoint is written into a hidden temporary directory: each file is written, flushed
and fsynced, then the manifest, then the directory is renamed into place with os.replace
and the parent directory fsynced. A SIGKILL at any moment therefore leaves either the new
checkpoint complete or only a leftover temporary directory, and the older checkpoints
untouched. Loading checks the manifest, sizes and hashes before reading anything, reads
both files completely, and only then lets the caller apply them.

training_state.pt is read with torch.load(weights_only=True): tensors, numbers, strings and
containers only. A file whose pickle would import or call anything is rejected.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import pickle
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import Tensor, nn

from overparam.errors import CheckpointError, NonFiniteWeightError

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1

# Test hooks, read only while writing a checkpoint: sleep this many seconds after the data
# files are written and before the manifest, so a test can SIGKILL the process mid-write.
# With OVERPARAM_TEST_STALL_CHECKPOINT_STEP set, only the checkpoint of that step stalls.
STALL_SECONDS_ENV = "OVERPARAM_TEST_STALL_CHECKPOINT_S"
STALL_STEP_ENV = "OVERPARAM_TEST_STALL_CHECKPOINT_STEP"

# Free space under which a failed checkpoint write is reported as a full disk. A write that
# fails for lack of space has used up all but the last partial block of the file system.
LOW_SPACE_BYTES = 1 << 20


@dataclass
class Checkpoint:
    """A checkpoint read completely into memory and validated against its manifest."""

    step: int
    path: Path
    model_state: dict[str, Tensor]
    training_state: dict[str, Any]


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def model_tensors(model: nn.Module) -> dict[str, Tensor]:
    """Return the model's state dict with each shared tensor (tied weights) under one name."""
    tensors: dict[str, Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen:
            continue
        seen.add(key)
        tensors[name] = tensor.detach()
    return tensors


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    with path.open("rb+") as stream:
        os.fsync(stream.fileno())


def _check_finite(tensors: dict[str, Tensor]) -> None:
    floating = {name: t for name, t in tensors.items() if t.is_floating_point()}
    if not floating:
        return
    finite = torch.stack([torch.isfinite(t).all() for t in floating.values()])
    if not bool(finite.all()):  # one host sync for the whole model
        bad = list(floating)[int((~finite).nonzero()[0])]
        raise NonFiniteWeightError(bad, "cannot save a checkpoint with NaN or Inf weights")


def _maybe_stall(step: int) -> None:
    seconds = os.environ.get(STALL_SECONDS_ENV)
    if not seconds:
        return
    only_step = os.environ.get(STALL_STEP_ENV)
    if only_step and int(only_step) != step:
        return
    log.warning("%s=%s: stalling the checkpoint of step %d", STALL_SECONDS_ENV, seconds, step)
    time.sleep(float(seconds))


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: nn.Module,
    training_state: dict[str, Any],
    keep: int,
) -> Path:
    """Write the checkpoint of `step` atomically and delete all but the newest `keep`.

    Raises NonFiniteWeightError, writing nothing, if a weight is NaN or Inf, so a diverged
    model never replaces a good checkpoint. Raises CheckpointError naming the checkpoint when
    a file cannot be written (a full disk, say), after deleting the partial files.
    """
    tensors = model_tensors(model)
    _check_finite(tensors)

    root = run_dir / CHECKPOINT_DIR
    final = root / checkpoint_name(step)
    temporary = root / f".tmp-{checkpoint_name(step)}-{os.getpid()}"
    try:
        _write_temporary(temporary, step, tensors, training_state)
    except (OSError, RuntimeError, SafetensorError) as error:
        # torch.save reports a full disk as a RuntimeError ("unexpected pos"), so the free
        # space is read before the partial files are deleted, to name the likely cause.
        free_bytes = _free_bytes(root)
        shutil.rmtree(temporary, ignore_errors=True)
        raise CheckpointError(_write_failure(final, error, free_bytes)) from error

    # Swap the directory into place. A checkpoint of the same step (a rerun after resume)
    # is moved aside first, because os.replace cannot replace a non-empty directory.
    if final.exists():
        aside = root / f".old-{checkpoint_name(step)}-{os.getpid()}"
        os.replace(final, aside)
        os.replace(temporary, final)
        shutil.rmtree(aside)
    else:
        os.replace(temporary, final)
    _fsync_directory(root)

    _prune(root, keep)
    return final


def _write_temporary(
    temporary: Path, step: int, tensors: dict[str, Tensor], training_state: dict[str, Any]
) -> None:
    """Write the data files, then the manifest, into `temporary`, each flushed to disk."""
    temporary.parent.mkdir(parents=True, exist_ok=True)
    if temporary.exists():
        shutil.rmtree(temporary)
    temporary.mkdir()

    # Data files first, each flushed to disk.
    cpu_tensors = {name: t.to("cpu").contiguous() for name, t in tensors.items()}
    safetensors.torch.save_file(
        cpu_tensors, str(temporary / MODEL_FILE), metadata={"step": str(step)}
    )
    _fsync_file(temporary / MODEL_FILE)
    with (temporary / STATE_FILE).open("wb") as stream:
        torch.save({"format_version": FORMAT_VERSION, "step": step, **training_state}, stream)
        stream.flush()
        os.fsync(stream.fileno())
    _maybe_stall(step)

    # The manifest last: a directory without a valid manifest is never loaded.
    manifest = {
        "format_version": FORMAT_VERSION,
        "step": step,
        "files": {
            name: {"bytes": (temporary / name).stat().st_size, "sha256": _sha256(temporary / name)}
            for name in (MODEL_FILE, STATE_FILE)
        },
    }
    with (temporary / MANIFEST_FILE).open("w", encoding="utf-8") as stream:
        json.dump(manifest, stream, indent=2)
        stream.flush()
        os.fsync(stream.fileno())
    _fsync_directory(temporary)


def _free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _write_failure(final: Path, error: Exception, free_bytes: int | None) -> str:
    """Return the message of a failed checkpoint write, naming the likely cause."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        cause, advice = "no space left on device", "free some space"
    elif free_bytes is not None and free_bytes < LOW_SPACE_BYTES:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        cause, advice = f"no space left on device ({detail})", "free some space"
    else:
        detail = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        cause, advice = detail.splitlines()[0] if detail else type(error).__name__, "fix this"
    return (
        f"cannot write checkpoint {final}: {cause}. The partial files were removed and the "
        f"older checkpoints are intact; {advice}, then continue the run with --resume."
    )


def _prune(root: Path, keep: int) -> None:
    """Delete leftover temporary directories and all but the newest `keep` checkpoints."""
    for leftover in root.glob(".tmp-*"):
        if not leftover.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(leftover, ignore_errors=True)
    for leftover in root.glob(".old-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for old in list_checkpoints(root.parent)[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Return the run's checkpoint directories, newest step first (validity unchecked)."""
    root = run_dir / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        if path.is_dir() and path.name.startswith("step-") and path.name[5:].isdigit():
            found.append((int(path.name[5:]), path))
    return [path for _, path in sorted(found, reverse=True)]


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read and validate one checkpoint directory; CheckpointError names the faulty file."""
    manifest_path = path / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        step = int(manifest["step"])
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"invalid checkpoint manifest {manifest_path}: {error}") from None

    for name in (MODEL_FILE, STATE_FILE):
        file_path = path / name
        expected = files.get(name) if isinstance(files, dict) else None
        if not isinstance(expected, dict):
            raise CheckpointError(f"checkpoint manifest {manifest_path} does not list {name}")
        if not file_path.is_file():
            raise CheckpointError(f"checkpoint file missing: {file_path}")
        size = file_path.stat().st_size
        if size != expected.get("bytes"):
            raise CheckpointError(
                f"checkpoint file truncated or corrupted: {file_path} has {size} bytes, "
                f"the manifest lists {expected.get('bytes')}"
            )
        if _sha256(file_path) != expected.get("sha256"):
            raise CheckpointError(
                f"checkpoint file corrupted: {file_path} does not match its SHA-256 in the manifest"
            )

    try:
        model_state = safetensors.torch.load_file(str(path / MODEL_FILE), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"invalid checkpoint file {path / MODEL_FILE}: {error}") from None
    training_state = load_training_state(path / STATE_FILE, map_location)
    if training_state.get("step") != step:
        raise CheckpointError(
            f"invalid checkpoint file {path / STATE_FILE}: step {training_state.get('step')} "
            f"differs from the manifest's {step}"
        )
    return Checkpoint(step, path, model_state, training_state)


def load_training_state(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read training_state.pt with weights_only=True, rejecting pickles that would run code."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"rejected checkpoint file {path}: it is not a weights-only state and loading it "
            f"would run code ({str(error).splitlines()[0]})"
        ) from None
    except (OSError, RuntimeError, EOFError, ValueError) as error:
        raise CheckpointError(f"invalid checkpoint file {path}: {error}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"invalid checkpoint file {path}: expected a dict, got {type(state)}")
    return state


def load_latest_checkpoint(
    run_dir: Path,
    map_location: str | torch.device = "cpu",
    on_invalid: Callable[[Path, CheckpointError], None] | None = None,
) -> Checkpoint | None:
    """Load the newest valid checkpoint, falling back to older ones past invalid ones.

    Each invalid checkpoint is logged as an error naming the file and passed to `on_invalid`.
    Returns None when the run has no checkpoint; raises CheckpointError when it has some
    but none is valid.
    """
    paths = list_checkpoints(run_dir)
    errors = []
    for path in paths:
        try:
            return load_checkpoint(path, map_location)
        except CheckpointError as error:
            log.error("%s; falling back to an older checkpoint", error)
            errors.append(str(error))
            if on_invalid is not None:
                on_invalid(path, error)
    if errors:
        raise CheckpointError("no valid checkpoint to resume from: " + "; ".join(errors))
    return None


def apply_model_state(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Copy checkpoint weights into `model` after checking every name, shape and dtype.

    Raises CheckpointError before anything is copied when the checkpoint does not fit.
    """
    expected = model_tensors(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint weights do not fit the model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    for name, tensor in expected.items():
        if state[name].shape != tensor.shape or state[name].dtype != tensor.dtype:
            raise CheckpointError(
                f"checkpoint weight {name} is {tuple(state[name].shape)} {state[name].dtype}, "
                f"the model's is {tuple(tensor.shape)} {tensor.dtype}"
            )
    result = model.load_state_dict(state, strict=False)
    tied = set(model.state_dict()) - set(expected)
    if result.unexpected_keys or set(result.missing_keys) - tied:
        raise CheckpointError(f"checkpoint weights did not load: {result}")

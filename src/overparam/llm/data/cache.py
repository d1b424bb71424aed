"""The on-disk token cache: one directory per (corpus, tokenizer, split rule) with two token files.

Layout of `<cache_dir>/tokens/<key>/`: `train.bin` and `val.bin` contain the raw token ids
(uint16 or uint32, native byte order, no header) and `meta.json` stores their dtype and token
counts. Every file is written to a temporary name and renamed into place, and `meta.json` is
written last, so a process killed mid-write leaves no `meta.json` or an old complete entry. An
entry is reused only when `meta.json` parses, its key and format match, and each token file has
exactly the size its token count implies.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

# Bumped when the file layout or the meta.json fields change, so old entries are rebuilt.
CACHE_FORMAT_VERSION = 1
SPLITS = ("train", "val")


def token_dtype(vocab_size: int) -> np.dtype:
    """Return uint16 for vocabularies of up to 65535 tokens, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.uint32)


def token_cache_key(**inputs: Any) -> str:
    """Return a hex key that changes whenever any input changes (inputs must be JSON values)."""
    payload = json.dumps({"format": CACHE_FORMAT_VERSION, **inputs}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def read_valid_meta(entry_dir: Path, key: str) -> dict[str, Any] | None:
    """Return the entry's metadata if the entry is complete and consistent, else None."""
    try:
        meta = json.loads((entry_dir / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    if meta.get("format") != CACHE_FORMAT_VERSION or meta.get("key") != key:
        return None

    try:
        itemsize = np.dtype(meta["dtype"]).itemsize
        for split in SPLITS:
            expected_bytes = int(meta[f"{split}_tokens"]) * itemsize
            if (entry_dir / f"{split}.bin").stat().st_size != expected_bytes:
                return None
    except (KeyError, TypeError, ValueError, OSError):
        return None
    return meta


def write_token_file(path: Path, chunks: Iterable[np.ndarray], dtype: np.dtype) -> int:
    """Write token id chunks to `path` atomically and return the number of tokens written."""
    num_tokens = 0

    def write(handle: Any) -> None:
        nonlocal num_tokens
        for chunk in chunks:
            handle.write(np.ascontiguousarray(chunk, dtype=dtype).tobytes())
            num_tokens += len(chunk)

    write_atomically(path, write)
    return num_tokens


def write_json_atomically(path: Path, value: Any) -> None:
    data = (json.dumps(value, indent=2, sort_keys=True) + "\n").encode("utf-8")
    write_atomically(path, lambda handle: handle.write(data))


def write_bytes_atomically(path: Path, data: bytes) -> None:
    write_atomically(path, lambda handle: handle.write(data))


def write_atomically(path: Path, write: Any) -> None:
    """Call `write(handle)` on a temporary file next to `path`, then rename it to `path`.

    The data is flushed to disk before the rename, so after a crash `path` contains either the
    old content or the complete new content.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def open_tokens(path: Path, dtype: np.dtype, num_tokens: int) -> np.ndarray:
    """Return the token file as a read-only 1-D memmap (an empty array when it has no tokens)."""
    if num_tokens == 0:
        return np.zeros(0, dtype=dtype)  # np.memmap rejects empty files
    return np.memmap(path, dtype=dtype, mode="r", shape=(num_tokens,))

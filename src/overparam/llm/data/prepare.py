"""`prepare_data`: documents -> train/val split -> tokenizer -> cached, memory-mapped token ids."""

from __future__ import annotations

import errno
import logging
import platform
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from overparam.errors import ConfigError, DataError
from overparam.llm.data.cache import (
    CACHE_FORMAT_VERSION,
    open_tokens,
    read_valid_meta,
    token_cache_key,
    token_dtype,
    write_json_atomically,
    write_token_file,
)
from overparam.llm.data.config import DataConfig
from overparam.llm.data.sources import load_documents
from overparam.llm.data.split import SPLIT_RULE_VERSION, documents_sha256, split_documents
from overparam.llm.data.tokenizer import CorpusTokenizer, load_tokenizer

log = logging.getLogger(__name__)

# Documents per `encode_batch` call, which runs on the tokenizer's thread pool. The batch size
# also bounds the memory of the Python token lists built from one call.
_ENCODE_BATCH_DOCUMENTS = 256
# Errors of a cache directory that is read-only, not permitted, or blocked by a regular file.
_UNWRITABLE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST)


@dataclass(frozen=True)
class PreparedData:
    """Token ids of the train and val splits, and what is needed to reproduce them."""

    train_tokens: np.ndarray
    """1-D read-only memmap of train token ids, with `eos_token_id` after every document."""
    val_tokens: np.ndarray
    """1-D read-only memmap of val token ids, laid out as `train_tokens`."""
    vocab_size: int
    """Tokenizer vocabulary size. The model's embedding must have at least this many rows."""
    eos_token_id: int
    """Token that ends every document."""
    tokenizer_path: str
    """A tokenizer.json file or tokenizer directory. Passing it as `DataConfig.tokenizer` loads
    the same tokenizer again."""
    fingerprint: dict[str, Any]
    """Corpus, tokenizer and split identity plus token counts, JSON-ready, for run records."""
    cache_hit: bool
    """Whether the token ids were read from the cache instead of tokenized by this call."""


def prepare_data(config: DataConfig, context_length: int) -> PreparedData:
    """Load, split and tokenize the corpus of `config`, reusing the token cache when it matches.

    Raises DataError when the source is missing, empty, undecodable or unreachable, or when the
    train or val split is shorter than one sequence of `context_length + 1` tokens.
    """
    if (
        not isinstance(context_length, int)
        or isinstance(context_length, bool)
        or context_length < 1
    ):
        raise ConfigError(f"context_length={context_length!r} is invalid: expected an integer >= 1")
    cache_dir = config.resolved_cache_dir()

    # Documents and split. Their fingerprints are the keys of both caches.
    documents = load_documents(config)
    corpus_sha256 = documents_sha256(documents)
    train_documents, val_documents = split_documents(documents, config.val_fraction)
    train_sha256 = documents_sha256(train_documents)

    try:
        tokenizer = load_tokenizer(
            config.tokenizer, config.vocab_size, train_documents, train_sha256, cache_dir
        )
    except OSError as error:
        _raise_if_unwritable(cache_dir, error)
        raise

    # Token cache: reuse a complete entry, else tokenize once and write it.
    key = token_cache_key(
        corpus_sha256=corpus_sha256,
        tokenizer_sha256=tokenizer.sha256,
        val_fraction=config.val_fraction,
        split_rule=SPLIT_RULE_VERSION,
    )
    entry_dir = cache_dir / "tokens" / key
    meta = read_valid_meta(entry_dir, key)
    cache_hit = meta is not None
    if cache_hit:
        log.info("token cache hit: reusing %s", entry_dir)
    else:
        log.info("token cache miss: tokenizing %d documents into %s", len(documents), entry_dir)
        try:
            meta = _write_token_cache(entry_dir, key, tokenizer, train_documents, val_documents)
        except OSError as error:
            _raise_if_unwritable(cache_dir, error)
            raise

    # Both splits must contain at least one training sequence.
    sequence_tokens = context_length + 1
    for split, split_documents_ in (("train", train_documents), ("val", val_documents)):
        num_tokens = meta[f"{split}_tokens"]
        if num_tokens < sequence_tokens:
            raise DataError(
                f"source '{config.source}': the {split} split has {num_tokens} tokens from "
                f"{len(split_documents_)} documents, fewer than one sequence of context_length + 1 "
                f"= {sequence_tokens} tokens; use a larger corpus (or max_chars), a shorter "
                f"context, or change data.val_fraction ({config.val_fraction})"
            )

    dtype = np.dtype(meta["dtype"])
    fingerprint = {
        "source": config.source,
        "python_version": platform.python_version(),
        "corpus_sha256": corpus_sha256,
        "tokenizer": config.tokenizer,
        "tokenizer_sha256": tokenizer.sha256,
        "vocab_size": tokenizer.vocab_size,
        "num_documents": len(documents),
        "train_documents": len(train_documents),
        "val_documents": len(val_documents),
        "val_fraction": config.val_fraction,
        "max_chars": config.max_chars,
        "train_tokens": meta["train_tokens"],
        "val_tokens": meta["val_tokens"],
        "token_cache_key": key,
    }
    return PreparedData(
        train_tokens=open_tokens(entry_dir / "train.bin", dtype, meta["train_tokens"]),
        val_tokens=open_tokens(entry_dir / "val.bin", dtype, meta["val_tokens"]),
        vocab_size=tokenizer.vocab_size,
        eos_token_id=tokenizer.eos_token_id,
        tokenizer_path=tokenizer.path,
        fingerprint=fingerprint,
        cache_hit=cache_hit,
    )


def _write_token_cache(
    entry_dir: Path,
    key: str,
    tokenizer: CorpusTokenizer,
    train_documents: Sequence[str],
    val_documents: Sequence[str],
) -> dict[str, Any]:
    dtype = token_dtype(tokenizer.vocab_size)
    meta: dict[str, Any] = {"format": CACHE_FORMAT_VERSION, "key": key, "dtype": dtype.name}
    for split, documents in (("train", train_documents), ("val", val_documents)):
        chunks = _encode_documents(tokenizer, documents, dtype)
        meta[f"{split}_tokens"] = write_token_file(entry_dir / f"{split}.bin", chunks, dtype)
    meta["vocab_size"] = tokenizer.vocab_size
    meta["eos_token_id"] = tokenizer.eos_token_id
    # Written last: its presence marks the entry as complete.
    write_json_atomically(entry_dir / "meta.json", meta)
    return meta


def _encode_documents(
    tokenizer: CorpusTokenizer, documents: Sequence[str], dtype: np.dtype
) -> Iterator[np.ndarray]:
    """Yield the token ids of the documents in batches, each document followed by EOS."""
    for start in range(0, len(documents), _ENCODE_BATCH_DOCUMENTS):
        batch = list(documents[start : start + _ENCODE_BATCH_DOCUMENTS])
        ids: list[int] = []
        for document_ids in tokenizer.encode_batch(batch):
            ids.extend(document_ids)
            ids.append(tokenizer.eos_token_id)
        yield np.asarray(ids, dtype=dtype)


def _raise_if_unwritable(cache_dir: Path, error: OSError) -> None:
    """Raise DataError when `error` means the cache directory cannot be written at all.

    Other failures, such as a full disk, are run-time errors and propagate unchanged.
    """
    if error.errno in _UNWRITABLE_ERRNOS:
        raise DataError(
            f"the data cache directory {cache_dir} is not writable ({error}); "
            "set data.cache_dir or $OVERPARAM_CACHE to a writable directory"
        ) from None

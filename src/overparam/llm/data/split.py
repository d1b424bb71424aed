"""Deterministic train/val split by document, and content fingerprints of document lists."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

# Bumped when the split rule changes, so token caches built with the old rule are not reused.
SPLIT_RULE_VERSION = 1


def split_documents(documents: Sequence[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """Split documents into (train, val); both keep the corpus order.

    Documents are visited in the order of the SHA-256 of their text, and each one joins val if
    val then still contains at most `val_fraction` of the corpus characters. When no document is
    that small, val gets the shortest one. Train always keeps at least one document.

    Sizing by characters, and skipping documents that would overshoot, keeps the val split
    near the requested share when document lengths vary widely: one stdlib file can hold a
    quarter of a 1M-character corpus. The choice depends only on the texts, so it is the same on
    every machine, and identical documents end up on the same side of the split.
    """
    if len(documents) < 2:
        return list(documents), []

    digests = [hashlib.sha256(text.encode("utf-8")).digest() for text in documents]
    by_digest = sorted(range(len(documents)), key=lambda i: (digests[i], i))
    max_val_chars = val_fraction * sum(len(text) for text in documents)

    val_indices: set[int] = set()
    val_chars = 0
    for index in by_digest:
        if val_chars + len(documents[index]) <= max_val_chars:
            val_indices.add(index)
            val_chars += len(documents[index])
    if not val_indices:
        val_indices.add(min(by_digest, key=lambda i: len(documents[i])))
    if len(val_indices) == len(documents):  # only possible when all documents are empty
        val_indices.remove(by_digest[-1])

    train = [text for i, text in enumerate(documents) if i not in val_indices]
    val = [text for i, text in enumerate(documents) if i in val_indices]
    return train, val


def documents_sha256(documents: Sequence[str]) -> str:
    """Return the SHA-256 of documents in order, with document boundaries part of the hash."""
    digest = hashlib.sha256()
    for text in documents:
        data = text.encode("utf-8")
        # A length prefix makes ["ab", "c"] and ["a", "bc"] hash differently.
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()

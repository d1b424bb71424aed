"""Resolution of `DataConfig.source` to a kind of corpus, and loading of its documents."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from overparam.errors import DataError, suggest
from overparam.llm.data.config import DataConfig
from overparam.llm.data.hub import (
    is_saved_dataset_dir,
    iter_hub_documents,
    iter_saved_dataset_documents,
)
from overparam.llm.data.local_files import (
    SUPPORTED_SUFFIXES,
    directory_files,
    glob_files,
    iter_file_documents,
)
from overparam.llm.data.stdlib import iter_stdlib_docs_documents, iter_stdlib_documents

BUILTIN_SOURCES = ("stdlib", "stdlib-docs")
HUB_PREFIX = "hf:"
# A Hub repository id: "owner/name", letters, digits and . _ - only.
_HUB_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_GLOB_CHARACTERS = ("*", "?", "[")


@dataclass(frozen=True)
class Source:
    """A resolved corpus source."""

    kind: str
    """One of "stdlib", "stdlib-docs", "file", "directory", "glob", "saved-dataset", "hub"."""
    location: str
    """The absolute path, the glob pattern or the Hub dataset id."""
    hub_config: str | None = None
    """Configuration name of a Hub dataset (the part after a second ':' of `hf:NAME:CONFIG`)."""


def resolve_source(source: str) -> Source:
    """Return the kind of corpus that `source` names, or raise DataError for a missing path.

    Order: the built-in names, `hf:` names, existing paths, glob patterns, then bare `owner/name`
    Hub ids. A missing path that ends in a supported suffix or starts with '.', '/' or '~' is
    reported as missing rather than looked up on the Hub.
    """
    if source in BUILTIN_SOURCES:
        return Source(kind=source, location=source)

    if source.startswith(HUB_PREFIX):
        name, _, hub_config = source[len(HUB_PREFIX) :].partition(":")
        if not name:
            raise DataError(f"source '{source}' names no dataset; expected hf:OWNER/NAME[:CONFIG]")
        return Source(kind="hub", location=name, hub_config=hub_config or None)

    path = Path(source).expanduser()
    if path.is_dir():
        kind = "saved-dataset" if is_saved_dataset_dir(path) else "directory"
        return Source(kind=kind, location=str(path.resolve()))
    if path.is_file():
        return Source(kind="file", location=str(path.resolve()))
    if any(character in source for character in _GLOB_CHARACTERS):
        return Source(kind="glob", location=source)

    looks_like_path = source.lower().endswith(SUPPORTED_SUFFIXES) or source.startswith(
        (".", "/", "~")
    )
    if _HUB_REPO_ID.fullmatch(source) and not looks_like_path:
        return Source(kind="hub", location=source)
    raise DataError(
        f"source '{source}' not found: no such file or directory, and not one of "
        f"{', '.join(BUILTIN_SOURCES)} or a Hub dataset (hf:OWNER/NAME)."
        + suggest(source, BUILTIN_SOURCES)
    )


def load_documents(config: DataConfig) -> list[str]:
    """Load the non-blank documents of `config.source` in order, capped at `config.max_chars`.

    The cap keeps whole documents while they fit and cuts the first one that does not, so the
    corpus has at most `max_chars` characters, and reading stops there.
    """
    source = resolve_source(config.source)
    documents: list[str] = []
    total_chars = 0
    for text in iter_source_documents(source, config):
        if not text.strip():
            continue
        if config.max_chars is not None and total_chars + len(text) >= config.max_chars:
            cut = text[: config.max_chars - total_chars]
            if cut.strip():
                documents.append(cut)
            break
        documents.append(text)
        total_chars += len(text)

    if not documents:
        raise DataError(
            f"source '{config.source}' contains no text: the corpus is empty "
            "(all documents are empty or blank)"
        )
    return documents


def iter_source_documents(source: Source, config: DataConfig) -> Iterator[str]:
    """Yield the raw documents of a resolved source, blank ones included."""
    if source.kind == "stdlib":
        yield from iter_stdlib_documents()
    elif source.kind == "stdlib-docs":
        yield from iter_stdlib_docs_documents()
    elif source.kind == "file":
        yield from iter_file_documents(Path(source.location), config.text_field)
    elif source.kind in ("directory", "glob"):
        yield from _iter_many_files(source, config.text_field)
    elif source.kind == "saved-dataset":
        yield from iter_saved_dataset_documents(
            Path(source.location), config.split, config.text_field
        )
    elif source.kind == "hub":
        # Streaming reads only the rows a capped run uses. Without a cap, the whole split is
        # downloaded once into the Hugging Face cache and read from there.
        yield from iter_hub_documents(
            source.location,
            source.hub_config,
            config.split,
            config.text_field,
            streaming=config.max_chars is not None,
        )
    else:
        raise AssertionError(f"unhandled source kind {source.kind!r}")


def _iter_many_files(source: Source, text_field: str) -> Iterator[str]:
    if source.kind == "directory":
        files = directory_files(Path(source.location))
        where = f"directory '{source.location}'"
    else:
        files = glob_files(source.location)
        where = f"glob pattern '{source.location}'"
    if not files:
        raise DataError(
            f"source {where} contains no {', '.join(SUPPORTED_SUFFIXES)} files: the corpus is empty"
        )
    for path in files:
        yield from iter_file_documents(path, text_field)

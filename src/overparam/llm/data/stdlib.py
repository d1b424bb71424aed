"""Corpora that ship with the Python interpreter, so a run needs no download.

"stdlib" is the standard library's own source code, one document per .py file.
"stdlib-docs" is the English documentation text in `pydoc_data.topics`, one document per topic:
prose about the language rather than code, used as the fine-tuning corpus.
"""

from __future__ import annotations

import os
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from overparam.errors import DataError
from overparam.llm.data.local_files import read_utf8

# Directory names pruned from the stdlib walk: third-party packages and test suites, which
# include the lib2to3 fixtures (lib2to3/tests/data) and idlelib/idle_test.
EXCLUDED_STDLIB_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test"})


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_source_files() -> list[Path]:
    """Return the standard library's .py files, sorted by path relative to the stdlib root."""
    root = stdlib_root()
    if not root.is_dir():
        raise DataError(f"source 'stdlib': the standard library directory {root} does not exist")

    found = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in EXCLUDED_STDLIB_DIRS and d != "__pycache__"]
        found.extend(Path(directory) / name for name in files if name.endswith(".py"))
    return sorted(found, key=lambda path: path.relative_to(root).as_posix())


def iter_stdlib_documents() -> Iterator[str]:
    """Yield the text of each standard library source file, in sorted path order."""
    for path in stdlib_source_files():
        yield read_utf8(path)


def iter_stdlib_docs_documents() -> Iterator[str]:
    """Yield the text of each pydoc topic, sorted by topic name."""
    try:
        from pydoc_data.topics import topics
    except ImportError as error:
        raise DataError(
            f"source 'stdlib-docs': this Python has no pydoc_data.topics module ({error})"
        ) from None
    for name in sorted(topics):
        yield topics[name]

"""Documents from local .txt, .jsonl and .parquet files, from directories and from glob patterns.

Files must be UTF-8. A .txt file is split into paragraphs at blank lines, and consecutive
paragraphs are grouped into documents of up to `TXT_DOCUMENT_CHARS` characters, so that the
document-level train/val split also works on a single large file.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from overparam.errors import DataError, suggest

SUPPORTED_SUFFIXES = (".txt", ".jsonl", ".parquet")
# Maximum document size of .txt files, in characters. A longer paragraph stays one document.
TXT_DOCUMENT_CHARS = 2000
# A line break followed by one or more lines that contain only spaces or tabs.
_BLANK_LINES = re.compile(r"\n(?:[ \t]*\n)+")
_PARQUET_BATCH_ROWS = 1024


def read_utf8(path: Path) -> str:
    """Read a whole file as UTF-8, or raise DataError with the offset of the first invalid byte."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path} is not valid UTF-8: byte 0x{data[error.start]:02x} at byte offset "
            f"{error.start} cannot be decoded; convert the file to UTF-8"
        ) from None


def iter_file_documents(path: Path, text_field: str) -> Iterator[str]:
    """Yield the documents of one .txt, .jsonl or .parquet file."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        yield from split_txt_documents(read_utf8(path))
    elif suffix == ".jsonl":
        yield from iter_jsonl_documents(path, text_field)
    elif suffix == ".parquet":
        yield from iter_parquet_documents(path, text_field)
    else:
        raise DataError(
            f"{path} has the unsupported file type '{path.suffix}'; "
            f"supported: {', '.join(SUPPORTED_SUFFIXES)}"
        )


def split_txt_documents(text: str) -> list[str]:
    """Split text into paragraphs at blank lines and group them into documents.

    Line endings become "\\n", and paragraphs inside a document are joined by one blank line.
    """
    text = text.replace("\r\n", "\n")
    paragraphs = [p.strip("\n") for p in _BLANK_LINES.split(text)]
    paragraphs = [p for p in paragraphs if p.strip()]

    documents: list[str] = []
    current: list[str] = []
    current_chars = 0
    for paragraph in paragraphs:
        joined_chars = current_chars + 2 + len(paragraph)
        if current and joined_chars > TXT_DOCUMENT_CHARS:
            documents.append("\n\n".join(current))
            current, current_chars = [], 0
        current_chars = current_chars + 2 + len(paragraph) if current else len(paragraph)
        current.append(paragraph)
    if current:
        documents.append("\n\n".join(current))
    return documents


def iter_jsonl_documents(path: Path, text_field: str) -> Iterator[str]:
    """Yield the `text_field` string of each row of a JSON Lines file; blank lines are skipped."""
    # Split on "\n" only: JSON strings may contain a raw U+2028, which str.splitlines() splits on.
    for line_number, line in enumerate(read_utf8(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(
                f"{path}, line {line_number}: invalid JSON ({error.msg}, column {error.colno})"
            ) from None

        if not isinstance(row, dict) or text_field not in row:
            keys = list(row) if isinstance(row, dict) else []
            raise DataError(
                f"{path}, line {line_number}: the row has no field '{text_field}' "
                f"(fields: {', '.join(map(str, keys)) or 'none, not a JSON object'}); "
                f"set data.text_field to the field that contains the text."
                + suggest(text_field, map(str, keys))
            )
        value = row[text_field]
        if not isinstance(value, str):
            raise DataError(
                f"{path}, line {line_number}: field '{text_field}' has type "
                f"{type(value).__name__}, expected str"
            )
        yield value


def iter_parquet_documents(path: Path, text_field: str) -> Iterator[str]:
    """Yield the strings of column `text_field` of a Parquet file, in row order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet_file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise DataError(f"{path} could not be read as a Parquet file: {error}") from None

    names = parquet_file.schema_arrow.names
    if text_field not in names:
        raise DataError(
            f"{path} has no column '{text_field}' (columns: {', '.join(names)}); set "
            f"data.text_field to the column that contains the text." + suggest(text_field, names)
        )
    column_type = parquet_file.schema_arrow.field(text_field).type
    if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
        raise DataError(f"{path}: column '{text_field}' has type {column_type}, expected string")

    row_index = 0
    for batch in parquet_file.iter_batches(columns=[text_field], batch_size=_PARQUET_BATCH_ROWS):
        for value in batch.column(0).to_pylist():
            if value is None:
                raise DataError(f"{path}, row {row_index}: column '{text_field}' is null")
            yield value
            row_index += 1


def directory_files(directory: Path) -> list[Path]:
    """Return the supported files under a directory, recursively, sorted by relative path.

    Hidden files and directories (names starting with ".") are skipped.
    """
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and name.lower().endswith(SUPPORTED_SUFFIXES):
                found.append(Path(root) / name)
    return sorted(found, key=lambda path: path.relative_to(directory).as_posix())


def glob_files(pattern: str) -> list[Path]:
    """Return the supported files a glob pattern matches (with ** recursive), sorted.

    A matched directory contributes its supported files, as a directory source does.
    """
    found: list[Path] = []
    for match in sorted(glob.glob(os.path.expanduser(pattern), recursive=True)):
        path = Path(match)
        if path.is_dir():
            found.extend(directory_files(path))
        elif path.name.lower().endswith(SUPPORTED_SUFFIXES):
            found.append(path)
    return list(dict.fromkeys(found))  # a file reached twice is read once

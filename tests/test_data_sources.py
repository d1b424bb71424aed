"""Corpus sources: each loads exactly the documents the test wrote, in order."""

from __future__ import annotations

import json
import os
import random
import sysconfig
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from overparam.llm.data import DataConfig
from overparam.llm.data.local_files import TXT_DOCUMENT_CHARS, split_txt_documents
from overparam.llm.data.sources import load_documents, resolve_source
from overparam.llm.data.split import documents_sha256

WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa")


def make_documents(count: int, seed: int = 0) -> list[str]:
    """Return `count` distinct multi-line documents of 100 to 400 characters."""
    rng = random.Random(seed)
    documents = []
    for index in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.randint(15, 60))]
        line_break = rng.randint(3, len(words) - 3)
        documents.append(
            f"doc {index}: " + " ".join(words[:line_break]) + "\n" + " ".join(words[line_break:])
        )
    return documents


def load(source: str | Path, **options) -> list[str]:
    return load_documents(DataConfig(source=str(source), **options))


def write_jsonl(path: Path, documents: list[str], field: str = "text") -> None:
    rows = [json.dumps({"id": i, field: text}) for i, text in enumerate(documents)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def write_parquet(path: Path, documents: list[str], field: str = "text") -> None:
    table = pa.table({"id": list(range(len(documents))), field: documents})
    pq.write_table(table, path, row_group_size=7)  # several row groups


def test_txt_paragraphs_grouped(tmp_path):
    paragraphs = ["a" * 900, "b" * 900, "c" * 900, "d" * 2500, "e" * 10]
    path = tmp_path / "corpus.txt"
    # Blank-line runs of different lengths, one with trailing spaces, and CRLF line endings.
    path.write_text(
        "\n\n\n"
        + paragraphs[0]
        + "\n\n"
        + paragraphs[1]
        + "\n  \n\n"
        + paragraphs[2]
        + "\r\n\r\n"
        + paragraphs[3]
        + "\n\n"
        + paragraphs[4]
        + "\n",
        encoding="utf-8",
    )

    documents = load(path)

    # 900 + 2 + 900 fits in 2000 characters, adding the third paragraph does not.
    assert documents == [
        paragraphs[0] + "\n\n" + paragraphs[1],
        paragraphs[2],
        paragraphs[3],
        paragraphs[4],
    ]
    assert TXT_DOCUMENT_CHARS == 2000


def test_txt_keeps_line_structure():
    text = "def f():\n    return 1\n\n\n    indented paragraph\nsecond line\n"

    assert split_txt_documents(text) == [
        "def f():\n    return 1\n\n    indented paragraph\nsecond line"
    ]


def test_txt_unicode_round_trip(tmp_path):
    document = "naïve café — 漢字 🙂\nline two"
    path = tmp_path / "unicode.txt"
    path.write_text(document, encoding="utf-8")

    assert load(path) == [document]


def test_jsonl_rows_in_order(tmp_path):
    documents = make_documents(12)
    documents[3] = "line separator \u2028 inside a JSON string"
    path = tmp_path / "corpus.jsonl"
    write_jsonl(path, documents)

    assert load(path) == documents


def test_jsonl_custom_field_and_blank_lines(tmp_path):
    documents = make_documents(5)
    path = tmp_path / "corpus.jsonl"
    rows = [json.dumps({"content": text}) for text in documents]
    path.write_text("\n\n".join(rows) + "\n\n", encoding="utf-8")

    assert load(path, text_field="content") == documents


def test_parquet_column_in_order(tmp_path):
    documents = make_documents(30)
    path = tmp_path / "corpus.parquet"
    write_parquet(path, documents, field="body")

    assert load(path, text_field="body") == documents


def test_directory_recursive_sorted(tmp_path):
    documents = make_documents(9)
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "nested").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    write_jsonl(tmp_path / "b" / "rows.jsonl", documents[0:3])
    write_parquet(tmp_path / "a" / "nested" / "table.parquet", documents[3:6])
    (tmp_path / "a" / "text.txt").write_text(documents[6], encoding="utf-8")
    (tmp_path / "c.txt").write_text(documents[7], encoding="utf-8")
    (tmp_path / "notes.md").write_text("not a supported file", encoding="utf-8")
    (tmp_path / ".hidden" / "skipped.txt").write_text("hidden", encoding="utf-8")

    # Sorted by relative path: a/nested/table.parquet, a/text.txt, b/rows.jsonl, c.txt.
    expected = documents[3:6] + [documents[6]] + documents[0:3] + [documents[7]]
    assert load(tmp_path) == expected


def test_glob_pattern_sorted(tmp_path):
    documents = make_documents(4)
    for index, text in enumerate(documents):
        (tmp_path / f"part-{index}.txt").write_text(text, encoding="utf-8")
    (tmp_path / "other.txt").write_text("not matched", encoding="utf-8")
    (tmp_path / "part-9.md").write_text("unsupported", encoding="utf-8")

    assert load(tmp_path / "part-*") == documents


def test_glob_recursive(tmp_path):
    documents = make_documents(2)
    (tmp_path / "x" / "y").mkdir(parents=True)
    (tmp_path / "x" / "y" / "deep.txt").write_text(documents[1], encoding="utf-8")
    (tmp_path / "top.txt").write_text(documents[0], encoding="utf-8")

    # Matches are sorted as path strings: "<root>/top.txt" < "<root>/x/y/deep.txt".
    assert load(f"{tmp_path}/**/*.txt") == [documents[0], documents[1]]


def test_saved_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    documents = make_documents(20)
    datasets.Dataset.from_dict({"text": documents, "id": list(range(20))}).save_to_disk(
        tmp_path / "saved"
    )

    assert resolve_source(str(tmp_path / "saved")).kind == "saved-dataset"
    assert load(tmp_path / "saved") == documents


def test_saved_dataset_dict_split(tmp_path):
    datasets = pytest.importorskip("datasets")
    train, test = make_documents(6, seed=1), make_documents(4, seed=2)
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"story": train}),
            "test": datasets.Dataset.from_dict({"story": test}),
        }
    ).save_to_disk(tmp_path / "saved")

    assert load(tmp_path / "saved", text_field="story") == train
    assert load(tmp_path / "saved", text_field="story", split="test") == test


def test_hub_dataset_streams_when_capped(monkeypatch):
    datasets = pytest.importorskip("datasets")
    documents = make_documents(50)
    calls = []

    def fake_load_dataset(name, config_name, split, streaming):
        calls.append((name, config_name, split, streaming))
        dataset = datasets.Dataset.from_dict({"text": documents})
        return dataset.to_iterable_dataset() if streaming else dataset

    # Offline mode skips the reachability request, and the fake replaces the download.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    max_chars = sum(map(len, documents[:3]))

    streamed = load("hf:owner/corpus:small", split="validation", max_chars=max_chars)
    downloaded = load("owner/corpus")

    assert calls == [
        ("owner/corpus", "small", "validation", True),
        ("owner/corpus", None, "train", False),
    ]
    assert streamed == documents[:3]
    assert downloaded == documents


def test_max_chars_cuts_last_document(tmp_path):
    documents = make_documents(10)
    path = tmp_path / "corpus.jsonl"
    write_jsonl(path, documents)
    max_chars = len(documents[0]) + len(documents[1]) + 7

    capped = load(path, max_chars=max_chars)

    assert capped == [documents[0], documents[1], documents[2][:7]]
    assert sum(map(len, capped)) == max_chars


def test_blank_documents_dropped(tmp_path):
    path = tmp_path / "corpus.jsonl"
    write_jsonl(path, ["first", "", "   \n ", "second"])

    assert load(path) == ["first", "second"]


def expected_stdlib_files() -> list[Path]:
    """List the stdlib's .py files with pathlib, independently of the walk in stdlib.py."""
    root = Path(sysconfig.get_paths()["stdlib"])
    excluded = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
    files = [
        path
        for path in root.rglob("*.py")
        if not excluded.intersection(path.relative_to(root).parts[:-1])
    ]
    return sorted(files, key=lambda path: path.relative_to(root).as_posix())


def test_stdlib_first_files(tmp_path):
    max_chars = 300_000
    expected: list[str] = []
    total = 0
    for path in expected_stdlib_files():
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            continue
        if total + len(text) >= max_chars:
            expected.append(text[: max_chars - total])
            break
        expected.append(text)
        total += len(text)

    documents = load("stdlib", max_chars=max_chars)

    assert documents == expected
    assert len(documents) > 10
    assert sum(map(len, documents)) == max_chars


def test_stdlib_excludes_tests_and_packages():
    from overparam.llm.data.stdlib import stdlib_root, stdlib_source_files

    relative = [path.relative_to(stdlib_root()).as_posix() for path in stdlib_source_files()]

    assert len(relative) > 500
    assert "os.py" in relative
    assert "json/decoder.py" in relative
    assert not [p for p in relative if p.startswith(("test/", "site-packages/"))]
    assert not [p for p in relative if "/tests/" in p or "/idle_test/" in p or "/test/" in p]
    assert relative == sorted(relative)


def test_stdlib_fingerprint_stable():
    first = load("stdlib", max_chars=50_000)
    second = load("stdlib", max_chars=50_000)

    assert documents_sha256(first) == documents_sha256(second)


def test_stdlib_docs_topics():
    from pydoc_data.topics import topics

    documents = load("stdlib-docs")

    assert documents == [topics[name] for name in sorted(topics) if topics[name].strip()]
    assert len(documents) > 50
    assert sum(map(len, documents)) > 100_000


def test_resolve_source_kinds(tmp_path):
    (tmp_path / "corpus.txt").write_text("x", encoding="utf-8")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        cases = {
            "stdlib": ("stdlib", "stdlib", None),
            "stdlib-docs": ("stdlib-docs", "stdlib-docs", None),
            "hf:roneneldan/TinyStories": ("hub", "roneneldan/TinyStories", None),
            "hf:HuggingFaceFW/fineweb-edu:sample-10BT": (
                "hub",
                "HuggingFaceFW/fineweb-edu",
                "sample-10BT",
            ),
            "roneneldan/TinyStories": ("hub", "roneneldan/TinyStories", None),
            "corpus.txt": ("file", str(tmp_path / "corpus.txt"), None),
            ".": ("directory", str(tmp_path), None),
            "*.txt": ("glob", "*.txt", None),
        }
        for source, (kind, location, hub_config) in cases.items():
            resolved = resolve_source(source)
            assert resolved.kind == kind, source
            assert resolved.location == location, source
            assert resolved.hub_config == hub_config, source
    finally:
        os.chdir(cwd)

"""Invalid data settings and unusable corpora: each raises an error that names the culprit."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from overparam.errors import ConfigError, DataError
from overparam.llm.data import DataConfig, prepare_data
from overparam.llm.data.hub import check_hub_reachable

CONTEXT_LENGTH = 16
DOCUMENTS = [f"document {i}: " + "some words here " * (5 + i % 7) for i in range(40)]


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def prepare(source: Path | str, tmp_path: Path, context_length: int = CONTEXT_LENGTH, **options):
    config = DataConfig(
        source=str(source), vocab_size=300, cache_dir=str(tmp_path / "cache"), **options
    )
    return prepare_data(config, context_length)


@pytest.mark.parametrize(
    ("field", "value", "accepted"),
    [
        ("source", "", "non-empty string"),
        ("text_field", "  ", "non-empty string"),
        ("split", 3, "non-empty string"),
        ("tokenizer", "", "non-empty string"),
        ("vocab_size", 256, "[257, "),
        ("vocab_size", True, "[257, "),
        ("vocab_size", 4096.0, "[257, "),
        ("val_fraction", 0.0, "(0, 1)"),
        ("val_fraction", 1.0, "(0, 1)"),
        ("val_fraction", "0.1", "(0, 1)"),
        ("max_chars", 0, ">= 1"),
        ("cache_dir", "", "directory path"),
    ],
)
def test_config_rejects_invalid(field, value, accepted):
    with pytest.raises(ConfigError) as raised:
        DataConfig(**{field: value})

    message = str(raised.value)
    assert f"data.{field}={value!r}" in message
    assert accepted in message


def test_config_vocab_unused_for_pretrained():
    assert DataConfig(tokenizer="gpt2", vocab_size=10).vocab_size == 10


@pytest.mark.parametrize("context_length", [0, -1, 2.5, True])
def test_context_length_invalid(tmp_path, context_length):
    path = write_jsonl(tmp_path / "corpus.jsonl", [{"text": t} for t in DOCUMENTS])

    with pytest.raises(ConfigError, match="context_length"):
        prepare(path, tmp_path, context_length=context_length)


@pytest.mark.parametrize("source", ["missing.txt", "./missing", "/no/such/dir/corpus.jsonl"])
def test_missing_path(tmp_path, source):
    with pytest.raises(DataError) as raised:
        prepare(source, tmp_path)

    assert f"source '{source}' not found" in str(raised.value)


def test_missing_path_suggests_builtin(tmp_path):
    with pytest.raises(DataError, match="Did you mean 'stdlib-docs'"):
        prepare("stdlib-doc", tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n  \n", encoding="utf-8")

    with pytest.raises(DataError) as raised:
        prepare(tmp_path / "empty.txt", tmp_path)

    assert str(tmp_path / "empty.txt") in str(raised.value)
    assert "empty" in str(raised.value)


def test_empty_directory(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "readme.md").write_text("unsupported", encoding="utf-8")

    with pytest.raises(DataError) as raised:
        prepare(tmp_path / "corpus", tmp_path)

    assert f"directory '{tmp_path / 'corpus'}'" in str(raised.value)
    assert ".txt, .jsonl, .parquet" in str(raised.value)


def test_glob_without_matches(tmp_path):
    pattern = f"{tmp_path}/*.jsonl"

    with pytest.raises(DataError, match="glob pattern"):
        prepare(pattern, tmp_path)


def test_unsupported_file_type(tmp_path):
    (tmp_path / "corpus.csv").write_text("text\nhello\n", encoding="utf-8")

    with pytest.raises(DataError) as raised:
        prepare(tmp_path / "corpus.csv", tmp_path)

    assert "'.csv'" in str(raised.value)
    assert str(tmp_path / "corpus.csv") in str(raised.value)


def test_train_shorter_than_sequence(tmp_path):
    path = write_jsonl(tmp_path / "corpus.jsonl", [{"text": t} for t in DOCUMENTS])

    with pytest.raises(DataError) as raised:
        prepare(path, tmp_path, context_length=100_000)

    message = str(raised.value)
    assert f"source '{path}'" in message
    assert "train split" in message
    assert "100001 tokens" in message


def test_val_shorter_than_sequence(tmp_path):
    # The only document short enough for val is "tiny", a handful of tokens.
    rows = [{"text": "tiny"}] + [{"text": "long text " * 50 + str(i)} for i in range(5)]
    path = write_jsonl(tmp_path / "corpus.jsonl", rows)

    with pytest.raises(DataError) as raised:
        prepare(path, tmp_path, val_fraction=0.001)

    message = str(raised.value)
    assert f"source '{path}'" in message
    assert "val split" in message
    assert "from 1 documents" in message


def test_jsonl_missing_field(tmp_path):
    rows = [{"text": "fine"}, {"text": "fine too"}, {"body": "no text field", "id": 3}]
    path = write_jsonl(tmp_path / "corpus.jsonl", rows)

    with pytest.raises(DataError) as raised:
        prepare(path, tmp_path)

    message = str(raised.value)
    assert f"{path}, line 3" in message
    assert "no field 'text'" in message
    assert "body, id" in message


def test_jsonl_field_suggestion(tmp_path):
    path = write_jsonl(tmp_path / "corpus.jsonl", [{"texts": "close name"}])

    with pytest.raises(DataError, match="Did you mean 'texts'"):
        prepare(path, tmp_path)


def test_jsonl_not_an_object(tmp_path):
    path = write_jsonl(tmp_path / "corpus.jsonl", [{"text": "fine"}, ["a", "list"]])

    with pytest.raises(DataError, match=r"line 2: the row has no field 'text'"):
        prepare(path, tmp_path)


def test_jsonl_non_string_field(tmp_path):
    path = write_jsonl(tmp_path / "corpus.jsonl", [{"text": 12}])

    with pytest.raises(DataError, match=r"line 1: field 'text' has type int, expected str"):
        prepare(path, tmp_path)


def test_jsonl_invalid_json(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"text": "ok"}\n{"text": broken}\n', encoding="utf-8")

    with pytest.raises(DataError) as raised:
        prepare(path, tmp_path)

    assert f"{path}, line 2: invalid JSON" in str(raised.value)


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_undecodable_bytes(tmp_path, suffix):
    prefix = '{"text": "caf' if suffix == ".jsonl" else "caf"
    data = prefix.encode("utf-8") + b"\xe9" + b' au lait"}\n'
    path = tmp_path / f"latin1{suffix}"
    path.write_bytes(data)

    with pytest.raises(DataError) as raised:
        prepare(path, tmp_path)

    message = str(raised.value)
    assert str(path) in message
    assert f"byte offset {len(prefix)}" in message
    assert "0xe9" in message
    assert "UTF-8" in message


def test_undecodable_file_in_directory(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("good text", encoding="utf-8")
    (tmp_path / "corpus" / "b.txt").write_bytes(b"ok\n\xff\xfe")

    with pytest.raises(DataError) as raised:
        prepare(tmp_path / "corpus", tmp_path)

    assert str(tmp_path / "corpus" / "b.txt") in str(raised.value)
    assert "byte offset 3" in str(raised.value)


def test_parquet_missing_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"content": ["a", "b"]}), path)

    with pytest.raises(DataError) as raised:
        prepare(path, tmp_path)

    message = str(raised.value)
    assert str(path) in message
    assert "no column 'text'" in message
    assert "content" in message


def test_parquet_null_value(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"text": ["a", None]}), path)

    with pytest.raises(DataError, match=r"row 1: column 'text' is null"):
        prepare(path, tmp_path)


def test_saved_dataset_missing_split(tmp_path):
    datasets = pytest.importorskip("datasets")
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a"]})}).save_to_disk(saved)

    with pytest.raises(DataError) as raised:
        prepare(saved, tmp_path, split="validation")

    assert f"source '{saved}' has no split 'validation'" in str(raised.value)
    assert "splits: train" in str(raised.value)


def test_saved_dataset_missing_column(tmp_path):
    datasets = pytest.importorskip("datasets")
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"story": ["a", "b"]}).save_to_disk(saved)

    with pytest.raises(DataError) as raised:
        prepare(saved, tmp_path)

    assert f"source '{saved}' has no column 'text'" in str(raised.value)
    assert "story" in str(raised.value)


def test_datasets_not_installed(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail

    with pytest.raises(DataError) as raised:
        prepare("hf:roneneldan/TinyStories", tmp_path)

    assert "hf:roneneldan/TinyStories" in str(raised.value)
    assert "pip install 'overparam[hub]'" in str(raised.value)


def test_tokenizer_path_missing(tmp_path):
    path = write_jsonl(tmp_path / "corpus.jsonl", [{"text": t} for t in DOCUMENTS])

    with pytest.raises(DataError, match=r"tokenizer './no-such/tokenizer.json' not found"):
        prepare(path, tmp_path, tokenizer="./no-such/tokenizer.json")


def test_tokenizer_file_without_eos(tmp_path):
    from tokenizers import Tokenizer, models

    path = write_jsonl(tmp_path / "corpus.jsonl", [{"text": t} for t in DOCUMENTS])
    tokenizer_file = tmp_path / "tokenizer.json"
    Tokenizer(models.BPE()).save(str(tokenizer_file))

    with pytest.raises(DataError) as raised:
        prepare(path, tmp_path, tokenizer=str(tokenizer_file))

    assert str(tokenizer_file) in str(raised.value)
    assert "<|endoftext|>" in str(raised.value)


def test_pretrained_without_eos(tmp_path):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    path = write_jsonl(tmp_path / "corpus.jsonl", [{"text": t} for t in DOCUMENTS])
    backend = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    PreTrainedTokenizerFast(tokenizer_object=backend).save_pretrained(tmp_path / "no-eos")

    with pytest.raises(DataError, match="neither an EOS nor a separator token"):
        prepare(path, tmp_path, tokenizer=str(tmp_path / "no-eos"))


def test_unwritable_cache(tmp_path, readonly_dir):
    path = write_jsonl(tmp_path / "corpus.jsonl", [{"text": t} for t in DOCUMENTS])

    with pytest.raises(DataError) as raised:
        prepare_data(DataConfig(source=str(path), cache_dir=str(readonly_dir)), CONTEXT_LENGTH)

    assert f"the data cache directory {readonly_dir} is not writable" in str(raised.value)


def test_cache_dir_under_file(tmp_path):
    path = write_jsonl(tmp_path / "corpus.jsonl", [{"text": t} for t in DOCUMENTS])
    blocking_file = tmp_path / "plain-file"
    blocking_file.write_text("", encoding="utf-8")

    with pytest.raises(DataError) as raised:
        prepare_data(DataConfig(source=str(path), cache_dir=str(blocking_file)), CONTEXT_LENGTH)

    assert f"cache directory {blocking_file} is not writable" in str(raised.value)


# Runs prepare_data for each (source, tokenizer) pair in a fresh interpreter, because
# huggingface_hub reads HF_HUB_OFFLINE and HF_ENDPOINT once, when it is imported.
HUB_SCRIPT = """
import json, sys, time
from overparam.errors import DataError
from overparam.llm.data import DataConfig, prepare_data

results = []
for source, tokenizer in json.loads(sys.argv[1]):
    start = time.monotonic()
    try:
        prepare_data(DataConfig(source=source, tokenizer=tokenizer, cache_dir=sys.argv[2]), 16)
        message = None
    except DataError as error:
        message = str(error)
    results.append({"message": message, "seconds": time.monotonic() - start})
print(json.dumps(results))
"""


def run_hub_cases(tmp_path: Path, cases: list[tuple[str, str]], **environment) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(tmp_path / "hf-home"), **environment)
    completed = subprocess.run(
        [sys.executable, "-c", HUB_SCRIPT, json.dumps(cases), str(tmp_path / "cache")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_hub_offline(tmp_path):
    pytest.importorskip("datasets")
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"text": t} for t in DOCUMENTS])
    cases = [("hf:roneneldan/TinyStories", "bpe"), (str(corpus), "owner/some-tokenizer")]

    dataset, tokenizer = run_hub_cases(tmp_path, cases, HF_HUB_OFFLINE="1")

    assert "'roneneldan/TinyStories'" in dataset["message"]
    assert "local path" in dataset["message"]
    assert "save_to_disk" in dataset["message"]
    assert dataset["seconds"] < 10
    assert "tokenizer 'owner/some-tokenizer' could not be loaded" in tokenizer["message"]
    assert tokenizer["seconds"] < 10


def test_hub_unreachable_endpoint(tmp_path):
    pytest.importorskip("datasets")
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"text": t} for t in DOCUMENTS])
    cases = [("roneneldan/TinyStories", "bpe"), (str(corpus), "owner/some-tokenizer")]

    # Port 9 (discard) on loopback: nothing listens, so every connection is refused at once.
    dataset, tokenizer = run_hub_cases(tmp_path, cases, HF_ENDPOINT="http://127.0.0.1:9")

    assert "Hub dataset 'roneneldan/TinyStories' could not be reached" in dataset["message"]
    assert "save_to_disk" in dataset["message"]
    assert "HF_HUB_OFFLINE=1" in dataset["message"]
    assert dataset["seconds"] < 10
    assert "Hub tokenizer 'owner/some-tokenizer' could not be reached" in tokenizer["message"]
    assert tokenizer["seconds"] < 10


def test_hub_request_timeout():
    # A loopback server that accepts connections and never answers.
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    start = time.monotonic()
    try:
        with pytest.raises(DataError, match="'owner/name' could not be reached"):
            check_hub_reachable(
                "owner/name",
                "dataset",
                offline=False,
                endpoint=f"http://127.0.0.1:{port}",
                timeout_seconds=0.5,
            )
    finally:
        server.close()
    assert time.monotonic() - start < 5


class _RepoNotFoundHandler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (name fixed by BaseHTTPRequestHandler)
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args):  # keep the test output clean
        pass


def test_hub_repository_not_found():
    server = HTTPServer(("127.0.0.1", 0), _RepoNotFoundHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(DataError, match="Hub dataset 'owner/missing' was not found"):
            check_hub_reachable(
                "owner/missing",
                "dataset",
                offline=False,
                endpoint=f"http://127.0.0.1:{server.server_port}",
                timeout_seconds=5,
            )
    finally:
        server.shutdown()
        server.server_close()

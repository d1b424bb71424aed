"""prepare_data: split, tokenizer, token layout and the on-disk caches."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from overparam.llm.data import DataConfig, PreparedData, TokenBatches, prepare_data
from overparam.llm.data import prepare as prepare_module
from overparam.llm.data.cache import token_dtype
from overparam.llm.data.sources import load_documents
from overparam.llm.data.split import split_documents
from overparam.llm.data.tokenizer import EOS_TOKEN, train_bpe

VOCAB_SIZE = 400
CONTEXT_LENGTH = 16
WORDS = ("def", "return", "class", "self", "import", "lambda", "yield", "None", "for", "in")


def make_documents(count: int, seed: int = 0) -> list[str]:
    """Return `count` distinct documents of 40 to 400 characters, with some non-ASCII text."""
    rng = random.Random(seed)
    documents = []
    for index in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.randint(5, 60))]
        documents.append(f"# {index} é→🙂\n" + " ".join(words) + "\n\tend\r\n")
    return documents


def write_jsonl(path: Path, documents: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in documents), encoding="utf-8")
    return path


def config_for(source: Path, cache_dir: Path, **options) -> DataConfig:
    return DataConfig(
        source=str(source), vocab_size=VOCAB_SIZE, cache_dir=str(cache_dir), **options
    )


def decode_documents(tokenizer: Tokenizer, tokens: np.ndarray, eos_token_id: int) -> list[str]:
    """Cut a token stream at EOS and decode each piece. The stream must end with EOS."""
    assert tokens[-1] == eos_token_id
    ends = np.flatnonzero(tokens == eos_token_id)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tokenizer.decode(tokens[s:e].tolist()) for s, e in zip(starts, ends, strict=True)]


@pytest.fixture
def corpus(tmp_path) -> tuple[Path, list[str]]:
    documents = make_documents(60)
    return write_jsonl(tmp_path / "corpus.jsonl", documents), documents


def test_split_deterministic_disjoint():
    documents = make_documents(200)

    train, val = split_documents(documents, 0.1)
    train_again, val_again = split_documents(documents, 0.1)

    assert (train, val) == (train_again, val_again)
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(documents)
    # Each split keeps the corpus order.
    assert train == [d for d in documents if d in set(train)]
    assert val == [d for d in documents if d in set(val)]


def test_split_val_char_share():
    documents = make_documents(200)
    total_chars = sum(map(len, documents))

    train, val = split_documents(documents, 0.1)

    val_chars = sum(map(len, val))
    assert val_chars <= 0.1 * total_chars
    # Greedy filling stops short of the target by less than the longest document.
    assert val_chars > 0.1 * total_chars - max(map(len, documents))


def test_split_ignores_document_order():
    documents = make_documents(100)
    shuffled = documents[:]
    random.Random(1).shuffle(shuffled)

    assert set(split_documents(documents, 0.2)[1]) == set(split_documents(shuffled, 0.2)[1])


def test_split_shortest_when_none_fit():
    documents = ["x" * 100, "y" * 50, "z" * 80]

    train, val = split_documents(documents, 0.01)

    assert val == ["y" * 50]
    assert train == ["x" * 100, "z" * 80]


def test_split_single_document():
    assert split_documents(["only"], 0.5) == (["only"], [])


def test_tokens_are_documents_joined_by_eos(corpus, tmp_path):
    path, documents = corpus

    prepared = prepare_data(config_for(path, tmp_path / "cache"), CONTEXT_LENGTH)

    train, val = split_documents(documents, 0.05)
    tokenizer = Tokenizer.from_file(prepared.tokenizer_path)
    eos = tokenizer.token_to_id(EOS_TOKEN)
    assert prepared.eos_token_id == eos
    for tokens, split in ((prepared.train_tokens, train), (prepared.val_tokens, val)):
        expected = []
        for text in split:
            expected += tokenizer.encode(text, add_special_tokens=False).ids + [eos]
        np.testing.assert_array_equal(tokens, expected)
        assert decode_documents(tokenizer, np.asarray(tokens), eos) == split


def test_bpe_round_trip(corpus, tmp_path):
    path, _ = corpus
    prepared = prepare_data(config_for(path, tmp_path / "cache"), CONTEXT_LENGTH)
    tokenizer = Tokenizer.from_file(prepared.tokenizer_path)
    texts = [
        "def f(x):\n    return x  # trailing spaces   \n",
        "\t\r\n\x00 control and NUL",
        "naïve café 漢字 🙂 ζ",
        " leading space and  double  spaces ",
        "<|endoftext|> written as plain text",
    ]

    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        assert tokenizer.decode(ids, skip_special_tokens=False) == text


def test_bpe_trained_on_train_split_only(corpus, tmp_path):
    path, documents = corpus

    prepared = prepare_data(config_for(path, tmp_path / "cache"), CONTEXT_LENGTH)

    train, _ = split_documents(documents, 0.05)
    expected = train_bpe(train, VOCAB_SIZE).to_str()
    assert Path(prepared.tokenizer_path).read_text(encoding="utf-8") == expected


def test_prepared_metadata(corpus, tmp_path):
    path, documents = corpus

    prepared = prepare_data(config_for(path, tmp_path / "cache"), CONTEXT_LENGTH)

    assert isinstance(prepared, PreparedData)
    assert prepared.train_tokens.dtype == np.uint16
    assert isinstance(prepared.train_tokens, np.memmap)
    assert prepared.vocab_size == Tokenizer.from_file(prepared.tokenizer_path).get_vocab_size()
    assert int(prepared.train_tokens.max()) < prepared.vocab_size
    fingerprint = prepared.fingerprint
    assert fingerprint["num_documents"] == len(documents)
    assert fingerprint["train_documents"] + fingerprint["val_documents"] == len(documents)
    assert fingerprint["train_tokens"] == len(prepared.train_tokens)
    assert fingerprint["val_tokens"] == len(prepared.val_tokens)
    assert fingerprint["source"] == str(path)
    assert fingerprint["tokenizer"] == "bpe"
    json.dumps(fingerprint)  # must be JSON-ready for run records


def test_token_dtype_by_vocab():
    assert token_dtype(65535) == np.uint16
    assert token_dtype(65536) == np.uint32


def test_cache_reused(corpus, tmp_path, monkeypatch):
    path, _ = corpus
    config = config_for(path, tmp_path / "cache")
    first = prepare_data(config, CONTEXT_LENGTH)

    def fail(*args, **kwargs):
        raise AssertionError("tokenized again despite a valid cache entry")

    monkeypatch.setattr(prepare_module, "_encode_documents", fail)
    monkeypatch.setattr("overparam.llm.data.tokenizer.train_bpe", fail)
    second = prepare_data(config, CONTEXT_LENGTH)

    assert not first.cache_hit
    assert second.cache_hit
    np.testing.assert_array_equal(second.train_tokens, first.train_tokens)
    np.testing.assert_array_equal(second.val_tokens, first.val_tokens)
    assert second.fingerprint == first.fingerprint


def test_cache_rebuilt_on_corpus_change(corpus, tmp_path):
    path, documents = corpus
    config = config_for(path, tmp_path / "cache")
    first = prepare_data(config, CONTEXT_LENGTH)

    write_jsonl(path, documents + ["one more document"])
    second = prepare_data(config, CONTEXT_LENGTH)

    assert not second.cache_hit
    assert second.fingerprint["corpus_sha256"] != first.fingerprint["corpus_sha256"]
    assert second.fingerprint["num_documents"] == len(documents) + 1


def test_cache_rebuilt_on_val_fraction_change(corpus, tmp_path):
    path, _ = corpus
    prepare_data(config_for(path, tmp_path / "cache"), CONTEXT_LENGTH)

    changed = prepare_data(config_for(path, tmp_path / "cache", val_fraction=0.2), CONTEXT_LENGTH)

    assert not changed.cache_hit


@pytest.mark.parametrize("damage", ["truncate", "delete_meta", "corrupt_meta", "wrong_count"])
def test_damaged_cache_rebuilt(corpus, tmp_path, damage):
    path, _ = corpus
    config = config_for(path, tmp_path / "cache")
    first = prepare_data(config, CONTEXT_LENGTH)
    expected_train = np.array(first.train_tokens)
    entry = Path(first.train_tokens.filename).parent
    del first  # release the memmap before damaging its file

    meta_path = entry / "meta.json"
    if damage == "truncate":  # a process killed while writing train.bin
        data = (entry / "train.bin").read_bytes()
        (entry / "train.bin").write_bytes(data[: len(data) // 2])
    elif damage == "delete_meta":
        meta_path.unlink()
    elif damage == "corrupt_meta":
        meta_path.write_text('{"format": 1, "key"', encoding="utf-8")
    else:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        meta["train_tokens"] += 1
        meta_path.write_text(json.dumps(meta), encoding="utf-8")

    rebuilt = prepare_data(config, CONTEXT_LENGTH)

    assert not rebuilt.cache_hit
    np.testing.assert_array_equal(rebuilt.train_tokens, expected_train)
    assert not list(entry.glob("*.tmp")), "temporary files left behind"


def test_corrupt_tokenizer_cache_retrained(corpus, tmp_path):
    path, _ = corpus
    config = config_for(path, tmp_path / "cache")
    first = prepare_data(config, CONTEXT_LENGTH)
    Path(first.tokenizer_path).write_text("{not json", encoding="utf-8")

    with pytest.warns(UserWarning, match="retraining the BPE"):
        second = prepare_data(config, CONTEXT_LENGTH)

    assert second.fingerprint["tokenizer_sha256"] == first.fingerprint["tokenizer_sha256"]
    assert second.cache_hit


def test_cache_dir_from_environment(corpus, tmp_path, monkeypatch):
    path, _ = corpus
    monkeypatch.setenv("OVERPARAM_CACHE", str(tmp_path / "env-cache"))

    prepared = prepare_data(DataConfig(source=str(path), vocab_size=VOCAB_SIZE), CONTEXT_LENGTH)

    assert Path(prepared.tokenizer_path).is_relative_to(tmp_path / "env-cache")
    assert Path(prepared.train_tokens.filename).is_relative_to(tmp_path / "env-cache")


def test_tokenizer_file_reused(corpus, tmp_path):
    path, _ = corpus
    pretraining = prepare_data(config_for(path, tmp_path / "cache"), CONTEXT_LENGTH)
    other = write_jsonl(tmp_path / "other.jsonl", make_documents(30, seed=5))

    finetuning = prepare_data(
        config_for(other, tmp_path / "cache", tokenizer=pretraining.tokenizer_path),
        CONTEXT_LENGTH,
    )

    assert finetuning.fingerprint["tokenizer_sha256"] == pretraining.fingerprint["tokenizer_sha256"]
    assert finetuning.vocab_size == pretraining.vocab_size
    tokenizer = Tokenizer.from_file(pretraining.tokenizer_path)
    train, _ = split_documents(load_documents(DataConfig(source=str(other))), 0.05)
    eos = pretraining.eos_token_id
    assert decode_documents(tokenizer, np.asarray(finetuning.train_tokens), eos) == train


def save_hf_tokenizer(directory: Path, documents: list[str], **special_tokens) -> Path:
    from transformers import PreTrainedTokenizerFast

    backend = train_bpe(documents, 300)
    backend.add_special_tokens(["<sep>", "<eos>"])
    PreTrainedTokenizerFast(tokenizer_object=backend, **special_tokens).save_pretrained(directory)
    return directory


def test_pretrained_tokenizer_dir(corpus, tmp_path):
    from transformers import AutoTokenizer

    path, documents = corpus
    directory = save_hf_tokenizer(tmp_path / "hf-tokenizer", documents, eos_token="<eos>")
    reference = AutoTokenizer.from_pretrained(directory)

    prepared = prepare_data(
        config_for(path, tmp_path / "cache", tokenizer=str(directory)), CONTEXT_LENGTH
    )

    assert prepared.eos_token_id == reference.convert_tokens_to_ids("<eos>")
    assert prepared.vocab_size == len(reference)
    train, _ = split_documents(documents, 0.05)
    expected = []
    for text in train:
        expected += reference.encode(text, add_special_tokens=False) + [prepared.eos_token_id]
    np.testing.assert_array_equal(prepared.train_tokens, expected)
    reloaded = AutoTokenizer.from_pretrained(prepared.tokenizer_path)
    for text in train[:5]:
        assert reloaded.encode(text, add_special_tokens=False) == reference.encode(
            text, add_special_tokens=False
        )


def test_pretrained_separator_as_eos(corpus, tmp_path):
    from transformers import AutoTokenizer

    path, documents = corpus
    directory = save_hf_tokenizer(tmp_path / "hf-tokenizer", documents, sep_token="<sep>")

    prepared = prepare_data(
        config_for(path, tmp_path / "cache", tokenizer=str(directory)), CONTEXT_LENGTH
    )

    sep = AutoTokenizer.from_pretrained(directory).convert_tokens_to_ids("<sep>")
    assert prepared.eos_token_id == sep
    assert prepared.train_tokens[-1] == sep


def test_batches_from_prepared(corpus, tmp_path):
    path, _ = corpus
    prepared = prepare_data(config_for(path, tmp_path / "cache"), CONTEXT_LENGTH)
    batches = TokenBatches(prepared.train_tokens, CONTEXT_LENGTH, seed=0)

    input_ids, labels = batches.get([1])

    sequence_tokens = CONTEXT_LENGTH + 1
    expected = np.asarray(prepared.train_tokens[sequence_tokens : 2 * sequence_tokens])
    np.testing.assert_array_equal(input_ids[0].numpy(), expected[:-1])
    np.testing.assert_array_equal(labels[0].numpy(), expected[1:])

"""The tokenizer of a run: a byte-level BPE trained on the train split, or a pretrained one.

`DataConfig.tokenizer` is "bpe", a `tokenizer.json` file (for example the `tokenizer_path` of an
earlier run, so fine-tuning keeps the pretraining vocabulary), a local Hugging Face tokenizer
directory, or a Hub model name. Trained BPEs are cached under `<cache_dir>/tokenizers/`, keyed
by the train corpus and the vocabulary size. Pretrained tokenizers are saved there too, so that
`tokenizer_path` always points to a local copy whose SHA-256 is the tokenizer fingerprint.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from overparam.errors import DataError
from overparam.llm.data.cache import write_bytes_atomically
from overparam.llm.data.hub import TOKENIZER_ADVICE, check_hub_reachable, transport_errors

log = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
# Bumped when the BPE recipe below changes, so cached tokenizers of the old recipe are retrained.
BPE_RECIPE_VERSION = 1


@dataclass(frozen=True)
class CorpusTokenizer:
    """A loaded tokenizer, reduced to what tokenizing the corpus needs."""

    path: str
    """A `tokenizer.json` file or a tokenizer directory that `AutoTokenizer` can load."""
    sha256: str
    """SHA-256 of the file, or of the directory's file names and contents."""
    vocab_size: int
    """Number of token ids, including special and added tokens."""
    eos_token_id: int
    """Token appended after every document."""
    backend: Tokenizer | None
    """The `tokenizers` object, when there is one (all BPEs and fast HF tokenizers)."""
    pretrained: Any = None
    """The transformers tokenizer, used when `backend` is None."""

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Return the token ids of each text, without special tokens."""
        if self.backend is not None:
            encodings = self.backend.encode_batch_fast(texts, add_special_tokens=False)
            return [encoding.ids for encoding in encodings]
        return [self.pretrained.encode(text, add_special_tokens=False) for text in texts]


def load_tokenizer(
    name: str,
    vocab_size: int,
    train_documents: Sequence[str],
    train_sha256: str,
    cache_dir: Path,
) -> CorpusTokenizer:
    """Train or load the tokenizer that `DataConfig.tokenizer` names (`name`)."""
    if name == "bpe":
        return load_or_train_bpe(train_documents, train_sha256, vocab_size, cache_dir)

    path = Path(name).expanduser()
    if path.is_file():
        return load_tokenizer_file(path)
    if path.is_dir():
        return load_pretrained(str(path.resolve()), cache_dir)
    if name.startswith((".", "/", "~")) or name.endswith(".json"):
        raise DataError(f"tokenizer '{name}' not found: no such file or directory")

    from huggingface_hub import constants

    check_hub_reachable(name, "model", offline=constants.HF_HUB_OFFLINE)
    return load_pretrained(name, cache_dir)


def train_bpe(documents: Sequence[str], vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE with `<|endoftext|>` as token 0.

    Byte-level pre-tokenization without a prefix space makes decode(encode(text)) == text for
    every string.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(documents, trainer=trainer, length=len(documents))
    return tokenizer


def load_or_train_bpe(
    documents: Sequence[str], documents_sha256: str, vocab_size: int, cache_dir: Path
) -> CorpusTokenizer:
    """Load the cached BPE of these documents and vocabulary size, or train and cache it."""
    key_text = f"bpe-v{BPE_RECIPE_VERSION}:{documents_sha256}:{vocab_size}"
    key = hashlib.sha256(key_text.encode("utf-8")).hexdigest()[:32]
    path = cache_dir / "tokenizers" / f"bpe-{key}" / "tokenizer.json"

    if path.is_file():
        try:
            corpus_tokenizer = load_tokenizer_file(path)
        except DataError as error:
            warnings.warn(
                f"retraining the BPE: the cached {path} is unusable ({error})", stacklevel=2
            )
        else:
            log.info("reusing the cached BPE tokenizer %s", path)
            return corpus_tokenizer

    log.info(
        "training a byte-level BPE (vocab_size=%d) on %d documents", vocab_size, len(documents)
    )
    tokenizer = train_bpe(documents, vocab_size)
    data = tokenizer.to_str().encode("utf-8")
    write_bytes_atomically(path, data)
    return CorpusTokenizer(
        path=str(path),
        sha256=hashlib.sha256(data).hexdigest(),
        vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
        eos_token_id=tokenizer.token_to_id(EOS_TOKEN),
        backend=tokenizer,
    )


def load_tokenizer_file(path: Path) -> CorpusTokenizer:
    """Load a `tokenizers` JSON file whose vocabulary has `<|endoftext|>`."""
    data = path.read_bytes()
    try:
        tokenizer = Tokenizer.from_str(data.decode("utf-8"))
    except Exception as error:  # tokenizers raises a bare Exception for a malformed file
        raise DataError(f"tokenizer file {path} could not be loaded: {error}") from None
    eos_token_id = tokenizer.token_to_id(EOS_TOKEN)
    if eos_token_id is None:
        raise DataError(
            f"tokenizer file {path} has no {EOS_TOKEN} token to separate documents; "
            "pass a tokenizer directory whose config sets eos_token instead"
        )
    return CorpusTokenizer(
        path=str(path),
        sha256=hashlib.sha256(data).hexdigest(),
        vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
        eos_token_id=eos_token_id,
        backend=tokenizer,
    )


def load_pretrained(name_or_dir: str, cache_dir: Path) -> CorpusTokenizer:
    """Load a transformers tokenizer and keep a content-addressed copy under `cache_dir`."""
    from transformers import AutoTokenizer

    try:
        pretrained = AutoTokenizer.from_pretrained(name_or_dir, trust_remote_code=False)
    except (OSError, ValueError, *transport_errors()) as error:
        raise DataError(
            f"tokenizer '{name_or_dir}' could not be loaded ({error}); {TOKENIZER_ADVICE}"
        ) from None

    eos_token_id = pretrained.eos_token_id
    if eos_token_id is None:
        eos_token_id = pretrained.sep_token_id
    if eos_token_id is None:
        raise DataError(
            f"tokenizer '{name_or_dir}' has neither an EOS nor a separator token, so documents "
            "cannot be joined; set eos_token in its tokenizer_config.json"
        )
    # Added tokens may sit above the base vocabulary, and ids need not be contiguous.
    vocab_size = max(len(pretrained), max(pretrained.get_vocab().values()) + 1)

    saved_dir = _save_content_addressed(pretrained, cache_dir / "tokenizers")
    return CorpusTokenizer(
        path=str(saved_dir),
        sha256=saved_dir.name.removeprefix("pretrained-"),
        vocab_size=vocab_size,
        eos_token_id=eos_token_id,
        backend=getattr(pretrained, "backend_tokenizer", None),
        pretrained=pretrained,
    )


def directory_sha256(directory: Path) -> str:
    """Return the SHA-256 of the names and contents of the files directly inside `directory`."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        data = path.read_bytes()
        digest.update(path.name.encode("utf-8") + b"\0")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def _save_content_addressed(pretrained: Any, parent: Path) -> Path:
    """Save the tokenizer to `parent/pretrained-<sha256 of the saved files>` and return that path.

    Saving to a temporary directory and renaming it makes the copy appear complete or not at all.
    """
    parent.mkdir(parents=True, exist_ok=True)
    temporary = parent / f".pretrained-{os.getpid()}-{uuid.uuid4().hex}.tmp"
    try:
        pretrained.save_pretrained(str(temporary))
        target = parent / f"pretrained-{directory_sha256(temporary)}"
        if target.is_dir():
            return target
        try:
            os.replace(temporary, target)
        except OSError:
            if not target.is_dir():  # not a concurrent save of the same files
                raise
        return target
    finally:
        shutil.rmtree(temporary, ignore_errors=True)

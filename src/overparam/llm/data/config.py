"""The data settings of a training run: corpus source, tokenizer, train/val split and cache."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from overparam.errors import ConfigError

# Byte-level BPE needs the 256 byte symbols plus the `<|endoftext|>` special token.
MIN_BPE_VOCAB_SIZE = 257
# Token ids are stored as uint16 or uint32 (see `token_dtype`).
MAX_VOCAB_SIZE = 2**32 - 1
DEFAULT_CACHE_DIR = "~/.cache/overparam"
CACHE_DIR_ENV = "OVERPARAM_CACHE"


@dataclass
class DataConfig:
    """Where the training text comes from and how it becomes token ids.

    Documents are split into train and val by a hash of their text (see `split.py`), and a
    trained BPE learns from the train split only.
    """

    source: str = field(
        default="stdlib",
        metadata={
            "help": '"stdlib", "stdlib-docs", a .txt/.jsonl/.parquet file, a directory, a glob '
            "pattern, a directory written by datasets' save_to_disk, or a Hub dataset "
            "hf:OWNER/NAME[:CONFIG]"
        },
    )
    text_field: str = field(
        default="text",
        metadata={"help": "field of .jsonl rows, .parquet files and datasets rows with the text"},
    )
    split: str = field(
        default="train", metadata={"help": "split of a Hub dataset or of a saved DatasetDict"}
    )
    tokenizer: str = field(
        default="bpe",
        metadata={
            "help": '"bpe" trains a byte-level BPE on the train split; anything else is a '
            "Hugging Face tokenizer name or local directory"
        },
    )
    vocab_size: int = field(
        default=4096,
        metadata={"help": "vocabulary size of the trained BPE (unused for a pretrained tokenizer)"},
    )
    val_fraction: float = field(
        default=0.05,
        metadata={
            "help": "share of corpus characters held out for validation, as whole documents, "
            "in (0, 1)"
        },
    )
    max_chars: int | None = field(
        default=None,
        metadata={"help": "corpus size cap in characters: documents in order, the last one cut"},
    )
    cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "tokenizer and token cache; default $OVERPARAM_CACHE or ~/.cache/overparam"
        },
    )

    def __post_init__(self) -> None:
        for name in ("source", "text_field", "split", "tokenizer"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"data.{name}={value!r} is invalid: expected a non-empty string")

        if self.tokenizer == "bpe" and not _is_int_in(
            self.vocab_size, MIN_BPE_VOCAB_SIZE, MAX_VOCAB_SIZE
        ):
            raise ConfigError(
                f"data.vocab_size={self.vocab_size!r} is invalid: a byte-level BPE needs an "
                f"integer in [{MIN_BPE_VOCAB_SIZE}, {MAX_VOCAB_SIZE}] (256 bytes + <|endoftext|>)"
            )

        is_number = isinstance(self.val_fraction, (int, float)) and not isinstance(
            self.val_fraction, bool
        )
        if not is_number or not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(
                f"data.val_fraction={self.val_fraction!r} is invalid: expected a number in (0, 1)"
            )

        if self.max_chars is not None and not _is_int_in(self.max_chars, 1, None):
            raise ConfigError(
                f"data.max_chars={self.max_chars!r} is invalid: expected None or an integer >= 1"
            )

        if self.cache_dir is not None and (
            not isinstance(self.cache_dir, str) or not self.cache_dir.strip()
        ):
            raise ConfigError(
                f"data.cache_dir={self.cache_dir!r} is invalid: expected None or a directory path"
            )

    def resolved_cache_dir(self) -> Path:
        """Return `cache_dir`, else $OVERPARAM_CACHE, else ~/.cache/overparam, made absolute."""
        chosen = self.cache_dir or os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR
        return Path(chosen).expanduser().resolve()


def _is_int_in(value: object, low: int, high: int | None) -> bool:
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    return value >= low and (high is None or value <= high)

"""The data pipeline of the Llama training harness.

`prepare_data(DataConfig(...), context_length)` loads a corpus, splits it into train and val by
document, trains or loads a tokenizer and returns the token ids as memory-mapped arrays, cached
on disk. `TokenBatches` turns a token array into deterministic batches for any step, rank and
micro-batch split.
"""

from overparam.llm.data.batches import TokenBatches
from overparam.llm.data.config import DataConfig
from overparam.llm.data.prepare import PreparedData, prepare_data

__all__ = ["DataConfig", "PreparedData", "TokenBatches", "prepare_data"]

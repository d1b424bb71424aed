"""Documents from Hugging Face `datasets`: a directory written by `save_to_disk`, or a Hub dataset.

`datasets` is an optional dependency (`pip install 'overparam[hub]'`) and is imported only here,
when such a source is used. Before any download, a single metadata request with a short timeout
checks that the Hub can be reached, because `load_dataset` retries a refused connection for
about 23 seconds (measured with datasets 5.2 and huggingface_hub 2.4 against a closed loopback
port).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from overparam.errors import DataError, suggest

# Timeout of the reachability request to the Hub, in seconds.
HUB_TIMEOUT_SECONDS = 10.0
_ROWS_PER_BATCH = 1000
TOKENIZER_ADVICE = "set data.tokenizer to a local tokenizer directory or tokenizer.json file"
OFFLINE_ADVICE = (
    "set data.source to a local path or to a dataset saved with `datasets.Dataset.save_to_disk`"
)


def is_saved_dataset_dir(path: Path) -> bool:
    """Return whether `path` was written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    if (path / "dataset_dict.json").is_file():
        return True
    return (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


def iter_saved_dataset_documents(path: Path, split: str, text_field: str) -> Iterator[str]:
    """Yield the `text_field` strings of a saved Dataset, or of split `split` of a DatasetDict."""
    datasets = import_datasets(f"source '{path}'")
    try:
        loaded = datasets.load_from_disk(str(path))
    except (OSError, ValueError) as error:
        raise DataError(f"source '{path}': could not load the saved dataset: {error}") from None

    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            names = list(loaded)
            raise DataError(
                f"source '{path}' has no split '{split}' (splits: {', '.join(names)}); "
                f"set data.split." + suggest(split, names)
            )
        loaded = loaded[split]
    yield from iter_dataset_texts(loaded, text_field, f"source '{path}'")


def iter_hub_documents(
    name: str, config_name: str | None, split: str, text_field: str, streaming: bool
) -> Iterator[str]:
    """Yield the `text_field` strings of split `split` of the Hub dataset `name`.

    With `streaming`, rows are read as they download, so a `max_chars` cap stops early.
    """
    datasets = import_datasets(f"source 'hf:{name}'")
    check_hub_reachable(name, "dataset", offline=datasets.config.HF_HUB_OFFLINE)
    try:
        loaded = datasets.load_dataset(name, config_name, split=split, streaming=streaming)
    except (OSError, ValueError, *transport_errors()) as error:
        raise DataError(
            f"could not load the Hub dataset '{name}' (split '{split}'): {error}; {OFFLINE_ADVICE}"
        ) from None
    yield from iter_dataset_texts(loaded, text_field, f"Hub dataset '{name}'")


def iter_dataset_texts(dataset: Any, text_field: str, described: str) -> Iterator[str]:
    """Yield the `text_field` strings of a `datasets` Dataset or IterableDataset, in order."""
    column_names = dataset.column_names  # None for some streaming datasets
    if column_names is not None and text_field not in column_names:
        raise DataError(
            f"{described} has no column '{text_field}' (columns: {', '.join(column_names)}); "
            f"set data.text_field." + suggest(text_field, column_names)
        )

    row_index = 0
    for batch in dataset.iter(batch_size=_ROWS_PER_BATCH):
        if text_field not in batch:
            raise DataError(
                f"{described}, row {row_index}: no column '{text_field}' "
                f"(columns: {', '.join(batch)}); set data.text_field." + suggest(text_field, batch)
            )
        for value in batch[text_field]:
            if not isinstance(value, str):
                raise DataError(
                    f"{described}, row {row_index}: column '{text_field}' has type "
                    f"{type(value).__name__}, expected str"
                )
            yield value
            row_index += 1


def import_datasets(described: str) -> ModuleType:
    """Import the optional `datasets` package, or raise DataError with the install command."""
    try:
        import datasets
    except ImportError as error:
        raise DataError(
            f"{described} needs the optional package 'datasets' ({error}); "
            "install it with: pip install 'overparam[hub]'"
        ) from None
    return datasets


def check_hub_reachable(
    repo_id: str,
    repo_type: str,
    *,
    offline: bool,
    endpoint: str | None = None,
    timeout_seconds: float = HUB_TIMEOUT_SECONDS,
) -> None:
    """Raise DataError unless the Hub responds to one metadata request for `repo_id` in time.

    In offline mode nothing is sent: the caller's loader then reads the local Hugging Face cache
    and fails at once when the repository is not in it.
    """
    if offline:
        return
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    kind = "dataset" if repo_type == "dataset" else "tokenizer"
    try:
        HfApi(endpoint=endpoint).repo_info(repo_id, repo_type=repo_type, timeout=timeout_seconds)
    except RepositoryNotFoundError:
        raise DataError(
            f"the Hub {kind} '{repo_id}' was not found (or is private); check the name, "
            f"or pass a local path"
        ) from None
    except (OSError, *transport_errors()) as error:
        detail = str(error) or type(error).__name__
        raise DataError(
            f"the Hub {kind} '{repo_id}' could not be reached ({detail}); "
            + (OFFLINE_ADVICE if repo_type == "dataset" else TOKENIZER_ADVICE)
            + ", or set HF_HUB_OFFLINE=1 to use a copy in the Hugging Face cache"
        ) from None


def transport_errors() -> tuple[type[Exception], ...]:
    """Return the network exception classes of the HTTP clients huggingface_hub may use.

    huggingface_hub 2.4 (the pinned version) uses httpx2, older releases use httpx or requests,
    and the httpx network errors do not derive from OSError.
    """
    errors: list[type[Exception]] = []
    for module_name in ("httpx2", "httpx"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        errors.append(module.HTTPError)
    try:
        import requests
    except ImportError:
        pass
    else:
        errors.append(requests.RequestException)
    return tuple(errors)

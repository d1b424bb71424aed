"""Export a finished run as a plain Hugging Face checkpoint that `model.init_from` can load.

The decomposed layers are folded back into nn.Linear (overparam.merge), so the export has the
original architecture's state-dict keys. The run's tokenizer is saved beside the weights, so
a fine-tuning run can set both `model.init_from` and `data.tokenizer` to the export directory.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch

import overparam
from overparam.errors import CheckpointError, ConfigError
from overparam.llm.checkpoint import apply_model_state, load_latest_checkpoint
from overparam.llm.config import RUN_INFO_KEY, RunConfig
from overparam.llm.model import instantiate_model, model_config
from overparam.llm.rundir import CONFIG_FILE, SUMMARY_FILE, read_json

log = logging.getLogger(__name__)

EXPORT_INFO_FILE = "overparam_export.json"


def export_pretrained(run_dir: str | Path, dest_dir: str | Path) -> Path:
    """Write the newest valid checkpoint of `run_dir` to `dest_dir` with save_pretrained.

    Raises ConfigError when `run_dir` has no config.json and CheckpointError when it has no
    valid checkpoint. Warns when the run did not complete (the export is then its last
    checkpoint before stopping).
    """
    run_dir, dest_dir = Path(run_dir), Path(dest_dir)
    saved = read_json(run_dir / CONFIG_FILE)
    if saved is None:
        raise ConfigError(f"cannot export {run_dir}: {CONFIG_FILE} is missing or unreadable")
    info = saved.get(RUN_INFO_KEY, {})
    config = RunConfig.load(run_dir / CONFIG_FILE)
    summary = read_json(run_dir / SUMMARY_FILE) or {}
    if summary.get("status") != "completed":
        warnings.warn(
            f"exporting run {run_dir} with status {summary.get('status')!r}: its newest "
            "checkpoint is not the end of a completed run",
            stacklevel=2,
        )

    # Rebuild the run's architecture and decomposition, then load the trained weights.
    hf_config = model_config(config, info.get("tokenizer_vocab_size"))
    torch.manual_seed(config.train.seed)
    model = instantiate_model(config, hf_config).float()
    overparam.decompose(model, config.decomposition.parameterization, config.decomposition.targets)
    checkpoint = load_latest_checkpoint(run_dir)
    if checkpoint is None:
        raise CheckpointError(f"cannot export {run_dir}: it has no checkpoint")
    apply_model_state(model, checkpoint.model_state)

    merged = overparam.merge(model)
    dest_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest_dir)
    _save_tokenizer(info.get("tokenizer_path"), dest_dir)
    (dest_dir / EXPORT_INFO_FILE).write_text(
        json.dumps(
            {
                "run_dir": str(run_dir.resolve()),
                "step": checkpoint.step,
                "status": summary.get("status"),
                "parameterization": config.decomposition.parameterization,
                "merged_layers": merged,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    log.info("exported step %d of %s to %s", checkpoint.step, run_dir, dest_dir)
    return dest_dir


def _save_tokenizer(tokenizer_path: str | None, dest_dir: Path) -> None:
    """Save the run's tokenizer (a tokenizer.json file or a directory) as a transformers one."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if not tokenizer_path:
        warnings.warn("the run records no tokenizer_path; exporting the model only", stacklevel=3)
        return
    path = Path(tokenizer_path)
    if path.is_file():
        from overparam.llm.data.tokenizer import EOS_TOKEN

        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token=EOS_TOKEN)
    elif path.is_dir():
        # The run itself loaded this tokenizer without remote code (overparam.llm.data).
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    else:
        warnings.warn(
            f"the run's tokenizer {path} no longer exists; exporting the model only", stacklevel=3
        )
        return
    tokenizer.save_pretrained(str(dest_dir))

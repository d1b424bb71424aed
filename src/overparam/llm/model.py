"""Build the network of a run: a Llama-3 preset or a pretrained causal LM, then decompose it.

Fair comparison across parameterizations: the dense weights are drawn from the run's seed
before any decomposition, so at a given seed every parameterization starts from the same
function (the decomposition keeps it, checked on a fixed batch).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, LlamaForCausalLM, PreTrainedConfig

import overparam
from overparam.errors import ConfigError, OverparamError, TargetNotFoundError
from overparam.llm.config import RunConfig

# Largest relative Frobenius error of the logits allowed between the dense model and its
# decomposition, in float32. Thin SVD reconstruction in float32 is accurate to about 1e-6.
MAX_LOGIT_RELATIVE_ERROR = 1e-4

# Tokens of the fixed batch on which the decomposition is checked to keep the function.
FUNCTION_CHECK_TOKENS = 64


@dataclass
class BuiltModel:
    """A model ready to train, with what the run records about it."""

    model: nn.Module
    decomposed_layers: list[str]  # qualified names of the target layers
    vocab_size: int
    max_position_embeddings: int
    num_parameters: int  # after decomposition
    num_dense_parameters: int  # before decomposition
    logit_relative_error: float | None  # dense vs decomposed logits on a fixed batch


def model_config(config: RunConfig, vocab_size: int | None) -> PreTrainedConfig:
    """Return the transformers config of the run's model (preset, or the pretrained one).

    For a preset, `vocab_size` (the tokenizer's) replaces the preset's and must not exceed it.
    """
    if config.model.init_from is None:
        preset = config.preset
        if vocab_size is not None and vocab_size > preset.vocab_size:
            raise ConfigError(
                f"invalid tokenizer for preset {preset.name}: its vocabulary has {vocab_size} "
                f"tokens but the model's has {preset.vocab_size}. Use a smaller data.vocab_size "
                "or a preset with a larger vocabulary."
            )
        hf_config = preset.llama_config(vocab_size, config.model.attention_implementation)
    else:
        try:
            hf_config = AutoConfig.from_pretrained(
                config.model.init_from,
                trust_remote_code=config.model.trust_remote_code,
                attn_implementation=config.model.attention_implementation,
            )
        except (OSError, ValueError) as error:
            advice = "Give a local checkpoint directory or a hub id."
            if "trust_remote_code" in str(error):
                advice = (
                    "It ships its own model code, which runs only with --trust-remote-code "
                    "(model.trust_remote_code = true): pass it only for code you trust."
                )
            raise ConfigError(
                f"invalid model.init_from = {config.model.init_from!r}: cannot read its "
                f"config ({error}). {advice}"
            ) from None
        if vocab_size is not None and vocab_size > hf_config.vocab_size:
            raise ConfigError(
                f"invalid tokenizer for model.init_from = {config.model.init_from!r}: its "
                f"vocabulary has {vocab_size} tokens but the model's has "
                f"{hf_config.vocab_size}. Use the tokenizer saved with the checkpoint."
            )

    max_positions = getattr(hf_config, "max_position_embeddings", None)
    if max_positions is not None and config.context_length > max_positions:
        raise ConfigError(
            f"invalid model.context_length = {config.context_length}; the model supports at "
            f"most {max_positions} positions."
        )
    return hf_config


def check_targets(config: RunConfig, hf_config: PreTrainedConfig) -> list[str]:
    """Resolve decomposition.targets on a weightless copy of the model; ConfigError if unknown.

    Runs before any weights are allocated, so a typo in a pattern fails in seconds even for
    the 1B preset.
    """
    with torch.device("meta"):
        skeleton = instantiate_model(config, hf_config)
    try:
        return overparam.resolve_targets(skeleton, config.decomposition.targets)
    except TargetNotFoundError as error:
        raise TargetNotFoundError(
            f"invalid decomposition.targets = {config.decomposition.targets!r}: {error}"
        ) from None


def instantiate_model(config: RunConfig, hf_config: PreTrainedConfig) -> nn.Module:
    """Create the run's architecture with freshly initialized weights (no checkpoint read)."""
    if config.model.init_from is None:
        return LlamaForCausalLM(hf_config)
    return AutoModelForCausalLM.from_config(
        hf_config, trust_remote_code=config.model.trust_remote_code
    )


def build_model(
    config: RunConfig,
    hf_config: PreTrainedConfig,
    device: torch.device,
    check_tokens: torch.Tensor | None = None,
) -> BuiltModel:
    """Create the dense model in float32 on `device`, then decompose its target layers.

    A preset is initialized from `config.train.seed`, so all parameterizations at a seed start
    from the same dense weights. `check_tokens` (1-D token ids) is the fixed batch on which
    the decomposed model must reproduce the dense logits; OverparamError if it does not.
    """
    dense = _create_dense(config, hf_config).to(device)
    dense.config.use_cache = False
    num_dense_parameters = sum(p.numel() for p in dense.parameters())

    parameterization = config.decomposition.parameterization
    reference_logits = None
    if check_tokens is not None and parameterization != "dense":
        reference_logits = _logits(dense, check_tokens)

    names = overparam.decompose(dense, parameterization, config.decomposition.targets)

    error = None
    if reference_logits is not None:
        logits = _logits(dense, check_tokens)
        error = float(
            torch.linalg.norm(logits - reference_logits) / torch.linalg.norm(reference_logits)
        )
        if not error <= MAX_LOGIT_RELATIVE_ERROR:
            raise OverparamError(
                f"decomposing {len(names)} layers into {parameterization} changed the logits "
                f"by a relative error of {error:.3g} (limit {MAX_LOGIT_RELATIVE_ERROR:g}); "
                "the decomposition does not keep the model's function."
            )

    dense.train()
    return BuiltModel(
        model=dense,
        decomposed_layers=names,
        vocab_size=int(hf_config.vocab_size),
        max_position_embeddings=int(getattr(hf_config, "max_position_embeddings", 0) or 0),
        num_parameters=sum(p.numel() for p in dense.parameters()),
        num_dense_parameters=num_dense_parameters,
        logit_relative_error=error,
    )


def _create_dense(config: RunConfig, hf_config: PreTrainedConfig) -> nn.Module:
    if config.model.init_from is None:
        # Seed right before the weights are drawn, so the initial weights depend on the seed
        # and the preset only.
        torch.manual_seed(config.train.seed)
        return LlamaForCausalLM(hf_config).float()
    try:
        return AutoModelForCausalLM.from_pretrained(
            config.model.init_from,
            config=hf_config,
            trust_remote_code=config.model.trust_remote_code,
            dtype=torch.float32,
        )
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"invalid model.init_from = {config.model.init_from!r}: cannot load its weights "
            f"({error})."
        ) from None


@torch.no_grad()
def _logits(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Float32 logits of `tokens` (T,) as one sequence, with autocast off."""
    device = next(model.parameters()).device
    input_ids = tokens[:FUNCTION_CHECK_TOKENS].to(device=device, dtype=torch.long)[None]  # (1, T)
    was_training = model.training
    model.eval()
    autocast_off = (
        torch.autocast(device.type, enabled=False)
        if device.type in ("cpu", "cuda")
        else contextlib.nullcontext()
    )
    with autocast_off:
        logits = model(input_ids=input_ids, use_cache=False).logits.float()  # (1, T, V)
    model.train(was_training)
    return logits


def export_pretrained(run_dir: str | Path, dest_dir: str | Path) -> Path:
    """Export a run as a Hugging Face checkpoint; see overparam.llm.export.export_pretrained."""
    from overparam.llm.export import export_pretrained as export  # export imports this module

    return export(run_dir, dest_dir)

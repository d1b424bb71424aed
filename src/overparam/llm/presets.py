"""Llama-3 architecture presets: the published Llama-3.2-1B shape and two CPU-sized scalings.

Every preset keeps the Llama-3 architecture (grouped-query attention, SwiGLU MLP, RMSNorm,
rotary position embeddings, tied input/output embeddings) and changes only the sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transformers import LlamaConfig

from overparam.errors import ConfigError, suggest
from overparam.parameterizations import parameter_count


@dataclass(frozen=True)
class Preset:
    """Sizes of one Llama-3 model; `llama_config()` turns them into a transformers LlamaConfig."""

    name: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    context_length: int  # default training context, at most max_position_embeddings
    rope_theta: float = 500_000.0
    rope_scaling: dict[str, Any] | None = None  # llama3 frequency scaling, None for plain RoPE
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True
    description: str = field(default="", compare=False)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def llama_config(
        self, vocab_size: int | None = None, attn_implementation: str | None = None
    ) -> LlamaConfig:
        """Build the LlamaConfig of this preset, with `vocab_size` replacing the preset's if given.

        `attn_implementation` ("sdpa", "eager", ...) is passed to transformers as is.

        transformers 5.x keeps `rope_theta` and the llama3 scaling in one `rope_parameters`
        dict (4.x used `rope_theta` plus `rope_scaling`).
        """
        rope_parameters: dict[str, Any] = {"rope_type": "default", "rope_theta": self.rope_theta}
        if self.rope_scaling is not None:
            rope_parameters = {**rope_parameters, **self.rope_scaling}
        return LlamaConfig(
            vocab_size=self.vocab_size if vocab_size is None else vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            head_dim=self.head_dim,
            hidden_act="silu",
            max_position_embeddings=self.max_position_embeddings,
            rms_norm_eps=self.rms_norm_eps,
            tie_word_embeddings=self.tie_word_embeddings,
            rope_parameters=rope_parameters,
            attention_bias=False,
            mlp_bias=False,
            bos_token_id=None,
            eos_token_id=None,
            pad_token_id=None,
            attn_implementation=attn_implementation,
        )

    def num_parameters(self, vocab_size: int | None = None, parameterization: str = "dense") -> int:
        """Count the model's parameters from the sizes (tied embeddings counted once).

        `parameterization` is the form of the attention projections (q, k, v, o), the
        default decomposition targets.
        """
        vocab = self.vocab_size if vocab_size is None else vocab_size
        hidden = self.hidden_size
        q_width = self.num_attention_heads * self.head_dim
        kv_width = self.num_key_value_heads * self.head_dim

        # (out, in) of q_proj, k_proj, v_proj, o_proj
        shapes = [(q_width, hidden), (kv_width, hidden), (kv_width, hidden), (hidden, q_width)]
        attention = sum(parameter_count(out, in_, parameterization) for out, in_ in shapes)
        mlp = 3 * hidden * self.intermediate_size  # gate, up and down projections
        norms = 2 * hidden  # input and post-attention RMSNorm weights
        per_layer = attention + mlp + norms

        embeddings = vocab * hidden * (1 if self.tie_word_embeddings else 2)
        return embeddings + self.num_hidden_layers * per_layer + hidden  # + final RMSNorm

    def num_attention_parameters(self) -> int:
        """Count the parameters of the q/k/v/o projections, the layers decomposed by default."""
        q_width = self.num_attention_heads * self.head_dim
        kv_width = self.num_key_value_heads * self.head_dim
        per_layer = 2 * self.hidden_size * q_width + 2 * self.hidden_size * kv_width
        return self.num_hidden_layers * per_layer


# Llama-3.2-1B as Meta publishes it (meta-llama/Llama-3.2-1B). These sizes give 1,235,814,400
# parameters, the published 1.24B.
_LLAMA32_1B = Preset(
    name="llama3.2-1b",
    hidden_size=2048,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    intermediate_size=8192,
    vocab_size=128_256,
    max_position_embeddings=131_072,
    context_length=1024,
    rope_theta=500_000.0,
    rope_scaling={
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
    description="the published Llama-3.2-1B shape, for the 8-GPU study",
)

# CPU-sized scalings. Sizes keep head_dim a power of two, 2:1 grouped-query attention and an MLP
# width of about 8/3 x hidden rounded up to a multiple of 64, the SwiGLU ratio Llama uses. The
# vocabularies are upper bounds: a run sizes its embedding to the tokenizer's vocabulary.
_LLAMA3_TINY = Preset(
    name="llama3-tiny",
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=192,
    vocab_size=4096,
    max_position_embeddings=512,
    context_length=128,
    description="smoke tests and fast sweeps: about 54 ms per default step on 2 CPU cores",
)

_LLAMA3_SMALL = Preset(
    name="llama3-small",
    hidden_size=256,
    num_hidden_layers=10,
    num_attention_heads=8,
    num_key_value_heads=4,
    intermediate_size=704,
    vocab_size=8192,
    max_position_embeddings=2048,
    context_length=256,
    description="CPU-scale study model, about 10M parameters",
)

PRESETS: dict[str, Preset] = {p.name: p for p in (_LLAMA3_TINY, _LLAMA3_SMALL, _LLAMA32_1B)}


def get_preset(name: str) -> Preset:
    """Return the preset called `name`; ConfigError with the accepted names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"invalid model.preset = {name!r}; expected one of {', '.join(PRESETS)}."
            + suggest(str(name), PRESETS)
        ) from None

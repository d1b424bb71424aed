"""Model surgery: swap nn.Linear layers for DecomposedLinear and fold them back."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from overparam.errors import ConfigError, TargetNotFoundError
from overparam.layers import DecomposedLinear
from overparam.parameterizations import Factors, compose, resolve_parameterization

# Shortcut -> name patterns, for Llama-style models (Hugging Face module names).
TARGET_SHORTCUTS: dict[str, tuple[str, ...]] = {
    "attention": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "mlp": ("gate_proj", "up_proj", "down_proj"),
    "all-linear": ("*",),
}

Targets = str | Sequence[str]


def _pattern_groups(targets: Targets) -> list[tuple[str, tuple[str, ...]]]:
    """(label, patterns) pairs: a shortcut is one group, each explicit pattern its own."""
    if isinstance(targets, str):
        targets = [targets]
    groups = [(target, TARGET_SHORTCUTS.get(target, (target,))) for target in targets]
    if not groups:
        raise ConfigError(
            "targets is empty; pass a shortcut (attention, mlp, all-linear) or patterns"
        )
    return groups


def _matches(qualified_name: str, pattern: str) -> bool:
    """A pattern matches the qualified name or its last component (fnmatch syntax)."""
    last = qualified_name.rsplit(".", 1)[-1]
    return fnmatch.fnmatchcase(qualified_name, pattern) or fnmatch.fnmatchcase(last, pattern)


def _linear_layers(model: nn.Module) -> dict[str, nn.Linear | DecomposedLinear]:
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear | DecomposedLinear)
    }


def _output_embedding_name(model: nn.Module) -> str | None:
    """Qualified name of a Hugging Face model's output layer, which 'all-linear' leaves out."""
    get_output = getattr(model, "get_output_embeddings", None)
    output = get_output() if callable(get_output) else None
    if output is None:
        return None
    return next((name for name, module in model.named_modules() if module is output), None)


def _describe(names: Iterable[str], limit: int = 12) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return f"{shown}, … ({len(names)} in all)" if len(names) > limit else shown


def resolve_targets(model: nn.Module, targets: Targets = "attention") -> list[str]:
    """Return the qualified names of the linear layers that ``targets`` selects.

    ``targets`` is a shortcut (``"attention"``, ``"mlp"``, ``"all-linear"``) or a list of
    fnmatch patterns matched against each layer's qualified name or its last component.
    Raises TargetNotFoundError, listing the model's linear layers, when a pattern matches
    nothing.
    """
    layers = _linear_layers(model)
    if not layers:
        raise TargetNotFoundError(f"model {type(model).__name__} has no nn.Linear layers")
    groups = _pattern_groups(targets)
    all_linear = any("*" in patterns for _, patterns in groups)
    excluded = {_output_embedding_name(model)} if all_linear else set()

    # A shortcut needs one of its patterns to match (a model may lack k_proj, say); an
    # explicit pattern must match on its own, so that a typo never passes silently.
    selected: list[str] = []
    for label, patterns in groups:
        hits = [
            name
            for name in layers
            if name not in excluded and any(_matches(name, pattern) for pattern in patterns)
        ]
        if not hits:
            raise TargetNotFoundError(
                f"target '{label}' matches no linear layer. The model's linear "
                f"layers are: {_describe(layers)}. Use a shortcut (attention, mlp, "
                "all-linear) or a pattern that matches one of these names."
            )
        selected.extend(name for name in hits if name not in selected)
    return [name for name in layers if name in selected]  # model order


def _set_submodule(model: nn.Module, qualified_name: str, module: nn.Module) -> None:
    parent_name, _, child_name = qualified_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child_name, module)


def _shared_weights(model: nn.Module) -> dict[int, list[str]]:
    """Map id(parameter) -> the names of the modules that hold it (to spot tied weights)."""
    owners: dict[int, list[str]] = {}
    for module_name, module in model.named_modules():
        for parameter in module.parameters(recurse=False):
            owners.setdefault(id(parameter), []).append(module_name)
    return owners


def decompose(model: nn.Module, parameterization: str, targets: Targets = "attention") -> list[str]:
    """Replace the selected ``nn.Linear`` layers by DecomposedLinear, in place.

    Each new layer starts from the old layer's weight, so the model computes the same function.
    For ``"dense"`` the layers stay as they are. Returns the qualified names of the selected
    layers. A layer whose weight is tied to another module (tied embeddings) is rejected,
    because decomposing it would untie the weights.
    """
    name = resolve_parameterization(parameterization)
    selected = resolve_targets(model, targets)
    if name == "dense":
        return selected

    owners = _shared_weights(model)
    for qualified_name in selected:
        layer = model.get_submodule(qualified_name)
        if isinstance(layer, DecomposedLinear):
            raise ConfigError(f"layer '{qualified_name}' is already decomposed")
        if len(owners[id(layer.weight)]) > 1:
            raise ConfigError(
                f"layer '{qualified_name}' shares its weight with "
                f"{', '.join(n for n in owners[id(layer.weight)] if n != qualified_name)} "
                "(tied weights); leave it out of the targets"
            )
        decomposed = DecomposedLinear.from_linear(layer, name)
        decomposed.layer_name = qualified_name
        decomposed.train(layer.training)
        _set_submodule(model, qualified_name, decomposed)
    return selected


def decomposed_layers(model: nn.Module) -> dict[str, DecomposedLinear]:
    """The model's DecomposedLinear layers by qualified name, in model order."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, DecomposedLinear)
    }


@torch.no_grad()
def merge(model: nn.Module) -> int:
    """Fold every DecomposedLinear back into an ``nn.Linear``, in place; return the count.

    The product is formed in float32 (float64 stays float64) and cast to the layer's dtype
    once, so a bf16 model loses no more precision than one rounding.
    """
    layers = decomposed_layers(model)
    for qualified_name, layer in layers.items():
        dtype = layer.U.dtype
        work = torch.float64 if dtype == torch.float64 else torch.float32
        weight = layer.compose() if dtype == work else _compose_in(layer, work)
        linear = nn.Linear(
            layer.in_features,
            layer.out_features,
            bias=layer.bias is not None,
            device=layer.U.device,
            dtype=dtype,
        )
        linear.weight.copy_(weight.to(dtype))
        if layer.bias is not None:
            linear.bias.copy_(layer.bias)
        linear.train(layer.training)
        _set_submodule(model, qualified_name, linear)
    return len(layers)


def _compose_in(layer: DecomposedLinear, dtype: torch.dtype) -> torch.Tensor:
    return compose(Factors(*(factor.to(dtype) for factor in layer.factors)))

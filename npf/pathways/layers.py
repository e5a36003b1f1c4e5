"""Which layers and parameters of a network carry a pathway (:class:`~npf.nets.MaskedLinear`
weights, and their biases when ``mask_bias``), and a context that runs them densely."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

from npf.algos.base import Algorithm
from npf.nets import MaskedLinear


def maskable_parameters(net: nn.Module, mask_bias: bool = False) -> dict[str, nn.Parameter]:
    """name → parameter for every parameter that a pathway masks: the weight matrix of each
    :class:`MaskedLinear` layer of ``net`` (and its bias when ``mask_bias``), in module order."""
    out: dict[str, nn.Parameter] = {}
    for mod_name, mod in net.named_modules():
        if isinstance(mod, MaskedLinear):
            prefix = f"{mod_name}." if mod_name else ""
            out[prefix + "weight"] = mod.weight
            if mask_bias and mod.bias is not None:
                out[prefix + "bias"] = mod.bias
    return out


def masked_layers(net: nn.Module) -> Iterator[tuple[str, MaskedLinear]]:
    """``(prefix, layer)`` for every :class:`MaskedLinear` of ``net``, prefix ``"name."`` (or "")."""
    for mod_name, mod in net.named_modules():
        if isinstance(mod, MaskedLinear):
            yield (f"{mod_name}." if mod_name else ""), mod


def all_modules(algo: Algorithm) -> list[nn.Module]:
    """Every network and target network of ``algo``, each once."""
    mods = list(algo.networks().values()) + list(algo.targets().values())
    seen, out = set(), []
    for m in mods:
        if id(m) not in seen:
            seen.add(id(m))
            out.append(m)
    return out


@contextlib.contextmanager
def masks_removed(algo: Algorithm) -> Iterator[None]:
    """Temporarily run every network (and target) of ``algo`` densely; restores the masks after."""
    saved = []
    for net in all_modules(algo):
        for _, layer in masked_layers(net):
            saved.append((layer, layer.weight_mask, layer.bias_mask, layer.pathway_forward))
            layer.weight_mask = None
            layer.bias_mask = None
            layer.pathway_forward = None
    try:
        yield
    finally:
        for layer, wm, bm, fwd in saved:
            layer.weight_mask, layer.bias_mask, layer.pathway_forward = wm, bm, fwd

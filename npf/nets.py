"""Plain networks shared by every algorithm.

Every network accepts inputs with arbitrary leading dimensions ``[..., features]``. When task
pathways are attached (see :mod:`npf.pathways`) the first leading dimension is the task axis
``N`` and each task runs through ``θ ⊙ m_n``, computed by the backend the pathways were attached
with (``MaskedLinear.pathway_forward``: masked-dense bmm, CSR kernels or the plain autograd
reference; docs/backends.md). Outputs of masked layers may then be non-contiguous (transposed)
views; element-wise ops, ``reshape`` and ``cat`` handle them, ``view`` may not. Algorithms never
see masks: they build networks with :func:`mlp` (or a factory passed in by a multitask
conditioning) and call them like any module.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
}


def _task_bmm(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """y[n] = x[n] @ weight[n].T + bias[n] for x [N, ..., in], weight [N, out, in], bias [N, out]."""
    n = weight.shape[0]
    if x.shape[0] != n:
        raise ValueError(f"input has {x.shape[0]} tasks on its first axis, weights have {n}")
    flat = x.reshape(n, -1, x.shape[-1])
    if bias is None:
        out = torch.bmm(flat, weight.transpose(1, 2))
    else:
        out = torch.baddbmm(bias.unsqueeze(1), flat, weight.transpose(1, 2))
    return out.reshape(*x.shape[:-1], weight.shape[1])


@torch.compiler.disable
def _run_pathway(hook: Callable[..., Tensor], x: Tensor, **kw) -> Tensor:
    """Call a pathway backend's forward; opaque to ``torch.compile`` (the backend keeps Python-side
    caches keyed by weight versions, which compiled code would otherwise guard on every step)."""
    return hook(x, **kw)


class MaskedLinear(nn.Linear):
    """``nn.Linear`` that can run N task pathways at once.

    With no mask it is exactly ``nn.Linear``. With a weight mask ``[N, out, in]`` attached, the
    input must be ``[N, ..., in]`` and task n uses ``weight ⊙ mask[n]`` (bias ⊙ bias_mask[n] when
    a bias mask is attached). The gradient on ``weight`` is therefore Σ_n mask[n] ⊙ ∇_n.
    """

    weight_mask: Tensor | None
    bias_mask: Tensor | None

    def __init__(self, in_features: int, out_features: int, bias: bool = True, **kw):
        super().__init__(in_features, out_features, bias=bias, **kw)
        self.register_buffer("weight_mask", None, persistent=False)
        self.register_buffer("bias_mask", None, persistent=False)
        # Optional alternative forward (e.g. a sparse backend); see npf.pathways.
        self.pathway_forward: Callable[[Tensor], Tensor] | None = None

    def set_masks(self, weight_mask: Tensor | None, bias_mask: Tensor | None = None) -> None:
        dtype = self.weight.dtype
        self.weight_mask = None if weight_mask is None else weight_mask.to(self.weight.device, dtype)
        self.bias_mask = None if bias_mask is None else bias_mask.to(self.weight.device, dtype)

    def forward(self, x: Tensor) -> Tensor:
        if self.weight_mask is None:
            return F.linear(x, self.weight, self.bias)
        if self.pathway_forward is not None:
            return _run_pathway(self.pathway_forward, x)
        w = torch.where(self.weight_mask != 0, self.weight.unsqueeze(0), 0.0)  # θ ⊙ m, by selection
        b = None
        if self.bias is not None:
            b = self.bias.unsqueeze(0).expand(w.shape[0], -1)
            if self.bias_mask is not None:
                b = b * self.bias_mask
        return _task_bmm(x, w, b)


class StackedLinear(nn.Module):
    """N independent linear layers (one per task), applied to ``[N, ..., in]``: a multi-head output."""

    def __init__(self, num_tasks: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_tasks, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(num_tasks, out_features))
        bound = 1.0 / math.sqrt(in_features)
        for n in range(num_tasks):
            nn.init.kaiming_uniform_(self.weight.data[n], a=math.sqrt(5))
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return _task_bmm(x, self.weight, self.bias)


#: Activation modules a pathway backend can fuse into the masked layer before them.
_FUSABLE: dict[type, str] = {nn.ReLU: "relu", nn.Tanh: "tanh"}


def _hooked(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks)


class MLP(nn.Sequential):
    """Fully connected network of :class:`MaskedLinear` layers.

    ``heads``: when set, the output layer is a :class:`StackedLinear` with one head per task
    (multi-head multitask baseline); inputs are then ``[N, ..., in]``.

    When a masked layer's pathway hook can fuse activations (``fuses_activation``: the ``dense``,
    ``sparse`` and ``auto`` backends of :mod:`npf.pathways`) and a ReLU or Tanh module follows it,
    the forward lets the layer apply that activation in place on its own output and skips the
    module: same numbers, one ``[N, ..., out]`` allocation and pass fewer. Modules carrying forward
    hooks are never fused.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int],
        activation: str = "relu",
        output_activation: str | None = None,
        heads: int | None = None,
    ):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        layers: list[nn.Module] = []
        dims = [in_dim, *hidden]
        for a, b in itertools.pairwise(dims):
            layers += [MaskedLinear(a, b), ACTIVATIONS[activation]()]
        if heads is None:
            layers.append(MaskedLinear(dims[-1], out_dim))
        else:
            layers.append(StackedLinear(heads, dims[-1], out_dim))
        if output_activation is not None:
            layers.append(ACTIVATIONS[output_activation]())
        super().__init__(*layers)

    def forward(self, x: Tensor) -> Tensor:
        mods = list(self._modules.values())
        i, count = 0, len(mods)
        while i < count:
            m = mods[i]
            if type(m) is MaskedLinear and i + 1 < count and m.weight_mask is not None:
                hook = m.pathway_forward
                act = _FUSABLE.get(type(mods[i + 1]))
                if (
                    act is not None
                    and getattr(hook, "fuses_activation", False)
                    and not _hooked(m)
                    and not _hooked(mods[i + 1])
                ):
                    x = _run_pathway(hook, x, activation=act)
                    i += 2
                    continue
            x = m(x)
            i += 1
        return x


MLPFactory = Callable[..., nn.Module]


def mlp(
    in_dim: int, out_dim: int, hidden: Sequence[int], activation: str = "relu", output_activation: str | None = None
) -> nn.Module:
    """Default network factory (single-task, one-hot and pathway methods)."""
    return MLP(in_dim, out_dim, hidden, activation, output_activation)


def multihead_factory(num_tasks: int) -> MLPFactory:
    """Factory for the multi-head baseline: shared trunk, one output head per task."""

    def make(in_dim, out_dim, hidden, activation="relu", output_activation=None):
        return MLP(in_dim, out_dim, hidden, activation, output_activation, heads=num_tasks)

    return make


class TwinQ(nn.Module):
    """Two Q networks Q(s, a); returns both as ``[..., 1]`` tensors."""

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: Sequence[int], activation: str = "relu", factory: MLPFactory = mlp
    ):
        super().__init__()
        self.q1 = factory(obs_dim + act_dim, 1, hidden, activation)
        self.q2 = factory(obs_dim + act_dim, 1, hidden, activation)

    def forward(self, obs: Tensor, act: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.cat([obs, act], dim=-1)
        return self.q1(x), self.q2(x)


LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class TanhGaussianPolicy(nn.Module):
    """SAC policy: a = tanh(u), u ~ N(μ(s), σ(s)); log-prob with the tanh change of variables."""

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: Sequence[int], activation: str = "relu", factory: MLPFactory = mlp
    ):
        super().__init__()
        self.net = factory(obs_dim, 2 * act_dim, hidden, activation)

    def forward(
        self,
        obs: Tensor,
        deterministic: bool = False,
        with_log_prob: bool = True,
        generator: torch.Generator | None = None,
        eps: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """``eps``: the standard normal noise ``[..., act_dim]`` (drawn from ``generator`` when None;
        passing it keeps the forward free of RNG state, e.g. for ``torch.compile``)."""
        mu, log_std = self.net(obs).chunk(2, dim=-1)
        log_std = torch.clamp(log_std, LOG_STD_MIN, LOG_STD_MAX)
        if deterministic:
            return torch.tanh(mu), None
        std = log_std.exp()
        if eps is None:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        u = mu + std * eps
        a = torch.tanh(u)
        if not with_log_prob:
            return a, None
        # log N(u; μ, σ) − Σ log(1 − tanh(u)²), the latter in a numerically stable form.
        log_prob = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1, keepdim=True)
        log_prob = log_prob - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1, keepdim=True)
        return a, log_prob


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when present, else CPU. ``cuda`` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device: {name!r} was requested but no CUDA GPU is available (use 'auto' or 'cpu')")
    return torch.device(name)


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging θ' ← τθ + (1 − τ)θ', in place, one multi-tensor op (same numbers as a
    ``lerp_`` per tensor; it moves every target's version counter, as pathway views expect)."""
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


# N copies of a network as one stacked network (DAPD pretraining, npf.dapd)
class StackedMaskedLinear(nn.Module):
    """N independent linear layers (one per copy/task) with optional per-copy masks:
    ``y[n] = x[n] @ (W[n] ⊙ M[n])ᵀ + b[n] (⊙ Mb[n])``; inputs are ``[N, ..., in]``."""

    def __init__(self, num_tasks: int, in_features: int, out_features: int):
        super().__init__()
        self.num_tasks, self.in_features, self.out_features = num_tasks, in_features, out_features
        # values are always loaded from a shared network's initial weights (broadcast_state)
        self.weight = nn.Parameter(torch.zeros(num_tasks, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(num_tasks, out_features))
        self.weight_mask: Tensor | None = None
        self.bias_mask: Tensor | None = None

    def set_masks(self, weight_mask: Tensor | None, bias_mask: Tensor | None = None) -> None:
        dt, dev = self.weight.dtype, self.weight.device
        self.weight_mask = None if weight_mask is None else weight_mask.to(dev, dt)
        self.bias_mask = None if bias_mask is None else bias_mask.to(dev, dt)

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight if self.weight_mask is None else self.weight * self.weight_mask
        b = self.bias if self.bias_mask is None else self.bias * self.bias_mask
        return _task_bmm(x, w, b)


class StackedMLP(nn.Sequential):
    """:class:`npf.nets.MLP`'s layout (same parameter names) with N stacked copies per layer."""

    def __init__(
        self,
        num_tasks: int,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int],
        activation: str = "relu",
        output_activation: str | None = None,
    ):
        layers: list[nn.Module] = []
        dims = [in_dim, *hidden]
        for a, b in itertools.pairwise(dims):
            layers += [StackedMaskedLinear(num_tasks, a, b), ACTIVATIONS[activation]()]
        layers.append(StackedMaskedLinear(num_tasks, dims[-1], out_dim))
        if output_activation is not None:
            layers.append(ACTIVATIONS[output_activation]())
        super().__init__(*layers)

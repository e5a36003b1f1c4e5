"""The contract every algorithm (SAC, BCQ, IQL) follows, so pathways and baselines can wrap it.

A batch is a dict of float tensors with arbitrary leading dimensions; the last is the feature
axis: ``obs [..., B, obs_dim]``, ``act [..., B, act_dim]``, ``rew [..., B, 1]``,
``next_obs [..., B, obs_dim]``, ``done [..., B, 1]`` (1.0 on true terminals, not time-outs).
In multitask training the first leading axis is the task axis N. Losses are reduced with
``mean()`` over every leading axis and then multiplied by ``loss_scale``: with equal batches per
task, ``N · mean`` is exactly Σ_n mean_b(loss_n), the paper's summed gradient (Algorithm 1);
``loss_scale = 1`` gives the average (Section 4.3, online).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from npf.nets import resolve_device

Batch = Mapping[str, Tensor]


COMPILE_MODES = ("auto", "on", "off")


class Algorithm:
    #: names of the networks that own a pathway mask, e.g. ("actor", "critic", "vae")
    roles: tuple[str, ...] = ()
    #: methods that are pure functions of tensors (no RNG, no Python state that changes between
    #: updates): what ``compile: on`` wraps in ``torch.compile`` (see :meth:`set_compile`)
    compilable: tuple[str, ...] = ()
    loss_scale: float = 1.0
    device: torch.device = torch.device("cpu")

    # ---------------------------------------------------------------- construction helpers
    def _configure(self, cfg: Any, cfg_type: type, obs_dim: int, act_dim: int, device: str | torch.device) -> Any:
        """Set ``cfg`` (a ``cfg_type``, or a mapping/None for ``cfg_type.from_dict``), the dims and
        the device (a string goes through :func:`npf.nets.resolve_device`); returns the config."""
        self.cfg = cfg if isinstance(cfg, cfg_type) else cfg_type.from_dict(cfg)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        return self.cfg

    @staticmethod
    @contextlib.contextmanager
    def seeded_init(seed: int | None) -> Iterator[None]:
        """Build the networks inside this block. A seed initialises them without touching the
        global RNG; without one they draw from (and advance) the global torch RNG like any module."""
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            yield

    def _finish_init(self, lr: float, seed: int | None, targets: tuple[str, ...] = ()) -> None:
        """After :meth:`seeded_init`: move every network to the device, add a frozen copy
        ``<role>_target`` of each role in ``targets``, one Adam ``<role>_opt`` per network, the
        update count and the sampling generator (seeded ``seed + 1``, or from the global RNG)."""
        nets = self.networks()
        for net in nets.values():
            net.to(self.device)
        for role in targets:
            setattr(self, f"{role}_target", copy.deepcopy(nets[role]).requires_grad_(False))
        for role, net in nets.items():
            setattr(self, f"{role}_opt", make_optimizer("adam", net.parameters(), lr))
        self.num_updates = 0
        # Sampling noise has its own generator, saved in state_dict.
        self.generator = make_generator(self.device, None if seed is None else seed + 1)

    # ---------------------------------------------------------------- helpers for subclasses
    def _scale(self, loss: Tensor) -> Tensor:
        return loss * self.loss_scale

    def _batch(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        d = self.device
        return (
            batch["obs"].to(d),
            batch["act"].to(d),
            batch["rew"].to(d),
            batch["next_obs"].to(d),
            batch["done"].to(d),
        )

    @staticmethod
    def _step(opt: torch.optim.Optimizer, loss: Tensor, module: nn.Module) -> None:
        opt.zero_grad(set_to_none=True)
        # inputs=: accumulate only into this network (e.g. an actor loss also reaches the critic).
        loss.backward(inputs=[p for p in module.parameters() if p.requires_grad])
        opt.step()

    # ---------------------------------------------------------------- torch.compile
    def set_compile(self, mode: str, fused_adam: bool = False) -> None:
        """Config keys ``compile`` and ``fused_adam``. ``off`` (default): eager, foreach Adam, today's
        numbers bit for bit; with ``fused_adam`` eager but with the fused Adam kernel (equal within
        float rounding; 2.4-4.6x faster optimizer steps on a CPU, docs/benchmarks.md).
        ``on``: the :attr:`compilable` loss functions go through ``torch.compile`` (static shapes;
        compiled at the first update, reused after) and the optimizers use the fused Adam kernel:
        equal within float rounding. ``auto``: at the first update, time both on that batch
        (interleaved), keep ``on`` only where it is faster by :data:`npf.algos.compile.MIN_GAIN`,
        and restore the state so that the timed updates leave no trace (see npf.algos.compile)."""
        from npf.algos import compile as compiling

        mode = compiling.compile_mode(mode)
        if mode not in COMPILE_MODES:
            raise ValueError(f"compile: unknown value {mode!r} (choose {', '.join(COMPILE_MODES)})")
        if not isinstance(fused_adam, bool):
            raise ValueError(f"fused_adam: expected true or false, got {fused_adam!r}")
        self.fused_adam = fused_adam
        compiling.set_mode(self, mode)

    def networks(self) -> dict[str, nn.Module]:
        """role → online network (the modules that masks are attached to)."""
        raise NotImplementedError

    def targets(self) -> dict[str, nn.Module]:
        """role → target network that must run through the same pathway as its online twin."""
        return {}

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        """role → that network's own training loss at the current parameters (used for SNIP
        saliency). Must not step any optimizer."""
        raise NotImplementedError

    def update(self, batch: Batch) -> dict[str, float]:
        """One gradient step of every network on ``batch``; returns scalar metrics."""
        raise NotImplementedError

    @torch.no_grad()
    def act(self, obs: Tensor, deterministic: bool = True) -> Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Networks, targets, optimizers and any learned scalars (everything resume needs).

        This default (for algorithms built with :meth:`_finish_init`) holds ``config``, each
        network under its role, each target under ``<role>_target``, each ``<role>_opt``, then
        :meth:`_extra_state`, ``generator`` and ``num_updates``."""
        nets = self.networks()
        return {
            "config": dataclasses.asdict(self.cfg),
            **{role: net.state_dict() for role, net in nets.items()},
            **{f"{role}_target": tgt.state_dict() for role, tgt in self.targets().items()},
            **{f"{role}_opt": getattr(self, f"{role}_opt").state_dict() for role in nets},
            **self._extra_state(),
            "generator": self.generator.get_state(),
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict) -> None:
        nets = self.networks()
        for role, net in nets.items():
            net.load_state_dict(state[role])
        for role, tgt in self.targets().items():
            tgt.load_state_dict(state[f"{role}_target"])
        for role in nets:
            load_optimizer(getattr(self, f"{role}_opt"), state[f"{role}_opt"])
        self._load_extra_state(state)
        self.generator.set_state(state["generator"].cpu())
        self.num_updates = int(state["num_updates"])

    def _extra_state(self) -> dict:
        """Entries of the default state_dict beyond networks, targets and optimizers."""
        return {}

    def _load_extra_state(self, state: dict) -> None:
        pass


def make_optimizer(name: str, params, lr: float, fused: bool = False) -> torch.optim.Optimizer:
    """Adam or AdamW. ``foreach`` (one multi-tensor kernel per step) gives the same numbers as
    torch's default single-tensor loop on CPU; ``fused=True`` (used by ``compile: on``) is one
    fused kernel, equal within float rounding."""
    kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(name)
    if kind is None:
        raise ValueError(f"optimizer: unknown value {name!r} (choose adam or adamw)")
    return kind(params, lr=lr, **({"fused": True} if fused else {"foreach": True}))


def load_optimizer(opt: torch.optim.Optimizer, state: dict) -> None:
    """``opt.load_state_dict(state)`` keeping ``opt``'s own implementation (foreach / fused): a
    checkpoint written by the single-tensor, foreach or fused variant loads into any of them."""
    impl = [(g.get("foreach"), g.get("fused")) for g in opt.param_groups]
    opt.load_state_dict(state)
    for group, (foreach, fused) in zip(opt.param_groups, impl):
        group["foreach"], group["fused"] = foreach, fused


def scalars(metrics: Mapping[str, Tensor]) -> dict[str, float]:
    """0-d metric tensors → floats with one host sync (not one ``.item()`` per metric)."""
    if not metrics:
        return {}
    values = torch.stack([v.detach().reshape(()).float() for v in metrics.values()]).tolist()
    return dict(zip(metrics, values))


def make_generator(device: torch.device, seed: int | None) -> torch.Generator:
    """The algorithm's own sampling RNG (saved in its state_dict for exact resume)."""
    if seed is None:  # follow the global torch seed so torch.manual_seed still reproduces runs
        seed = int(torch.randint(0, 2**62, (1,)).item())
    return torch.Generator(device=device).manual_seed(seed)


def check_finite(metrics: dict[str, float], step: int | None = None) -> None:
    """Stop with the offending loss named when a loss becomes NaN/inf."""
    import math

    for k, v in metrics.items():
        if not math.isfinite(v):
            where = f" at update {step}" if step is not None else ""
            raise FloatingPointError(f"non-finite {k} = {v}{where}")

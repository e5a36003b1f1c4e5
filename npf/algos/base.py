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

from typing import Mapping

import torch
from torch import Tensor, nn

Batch = Mapping[str, Tensor]


class Algorithm:
    #: names of the networks that own a pathway mask, e.g. ("actor", "critic", "vae")
    roles: tuple[str, ...] = ()
    loss_scale: float = 1.0
    device: torch.device = torch.device("cpu")

    # ---------------------------------------------------------------- helpers for subclasses
    def _scale(self, loss: Tensor) -> Tensor:
        return loss * self.loss_scale

    def _batch(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        d = self.device
        return (batch["obs"].to(d), batch["act"].to(d), batch["rew"].to(d),
                batch["next_obs"].to(d), batch["done"].to(d))

    @staticmethod
    def _step(opt: torch.optim.Optimizer, loss: Tensor, module: nn.Module) -> None:
        opt.zero_grad(set_to_none=True)
        # inputs=: accumulate only into this network (e.g. an actor loss also reaches the critic).
        loss.backward(inputs=[p for p in module.parameters() if p.requires_grad])
        opt.step()

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
        """Networks, targets, optimizers and any learned scalars (everything resume needs)."""
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError


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

"""Implicit Q-Learning (Kostrikov, Nair & Levine, 2021).

Reads top to bottom like the reference implementation (github.com/ikostrikov/implicit_q_learning)
and its CORL port:

* value:  L_V = E[|τ − 1(u < 0)|·u²], u = min(Q'1, Q'2)(s, a) − V(s), expectile τ = 0.7,
  Q' the target critic;
* critic: L_Q = E[(Q1(s, a) − y)²] + E[(Q2(s, a) − y)²], y = r + γ(1 − done)·V(s');
* actor:  L_π = −E[min(exp(β·A), w_max)·log π(a|s)], A = min(Q'1, Q'2)(s, a) − V(s), β = 3,
  w_max = 100; π(·|s) = N(tanh(f(s)), exp(log_std)) with a state-independent learnable log_std;
* target critic by Polyak averaging (τ_polyak = 5e-3); optional cosine decay of the actor's lr.

Update order follows the reference: V step, then actor and critic steps using the new V, then the
target update. Batch tensors may carry any leading dims ``[..., B, d]`` (first = task axis in
multitask training, with pathway masks attached to the networks by other code).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from npf.algos.base import Algorithm, Batch, scalars
from npf.algos.hparams import from_dict, hp
from npf.nets import ACTIVATIONS, MLPFactory, TwinQ, mlp, soft_update


@dataclass
class IQLConfig:
    lr: float = hp(1e-3, gt=0)
    """Adam learning rate of actor, critic and value networks"""
    gamma: float = hp(0.99, ge=0, le=1)
    """discount factor"""
    tau: float = hp(5e-3, gt=0, le=1)
    """Polyak rate of the target critic"""
    actor_hidden: list[int] = hp([1024, 1024], ge=1)
    """hidden layer widths of the actor"""
    critic_hidden: list[int] = hp([1024, 1024], ge=1)
    """hidden layer widths of each Q network"""
    value_hidden: list[int] = hp([1024, 1024], ge=1)
    """hidden layer widths of the value network"""
    expectile: float = hp(0.7, gt=0, lt=1)
    """expectile τ of the value loss |τ − 1(u < 0)|·u² (0.5: the mean)"""
    beta: float = hp(3.0, ge=0)
    """inverse temperature β of the advantage weights exp(β·A)"""
    max_weight: float = hp(100.0, gt=0)
    """exp(β·A) is clipped at this value"""
    log_std_min: float = hp(-5.0)
    """lower clamp of the state-independent actor log_std"""
    log_std_max: float = hp(2.0)
    """upper clamp of the actor log_std (above log_std_min)"""
    lr_schedule: str = hp("none", choices=["none", "cosine"])
    """none, or cosine decay of the actor's lr over schedule_steps"""
    schedule_steps: int = hp(1_000_000, ge=1)
    """updates of the cosine schedule"""
    activation: str = hp("relu", choices=list(ACTIVATIONS))
    """activation of the hidden layers (the authors used tanh for the MuJoCo offline networks)"""

    def __post_init__(self):
        if self.lr_schedule not in ("none", "cosine"):
            raise ValueError(f"iql: lr_schedule must be 'none' or 'cosine', got {self.lr_schedule!r}")
        if not self.log_std_min < self.log_std_max:
            raise ValueError(f"iql: log_std_min ({self.log_std_min}) must be below log_std_max ({self.log_std_max})")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, where: str = "iql") -> IQLConfig:
        return from_dict(cls, d, where)


class GaussianPolicy(nn.Module):
    """π(·|s) = N(tanh(f(s)), diag exp(log_std)²), log_std a learnable vector (not state dependent)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden,
        activation: str = "relu",
        factory: MLPFactory = mlp,
        log_std_min: float = -5.0,
        log_std_max: float = 2.0,
    ):
        super().__init__()
        self.net = factory(obs_dim, act_dim, hidden, activation, "tanh")
        self.log_std = nn.Parameter(torch.zeros(act_dim))
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (mean [..., act_dim], log_std [act_dim])."""
        return self.net(obs), self.log_std.clamp(self.log_std_min, self.log_std_max)

    def log_prob(self, obs: Tensor, act: Tensor) -> Tensor:
        mean, log_std = self(obs)
        z = (act - mean) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1, keepdim=True)


def expectile_loss(diff: Tensor, expectile: float) -> Tensor:
    """E[|τ − 1(u < 0)|·u²] with u = target − prediction."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.pow(2)).mean()


class IQL(Algorithm):
    roles = ("actor", "critic", "value")
    compilable = ("target_q", "value_loss", "critic_loss", "actor_loss")

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        cfg: IQLConfig | Mapping | None = None,
        device: str | torch.device = "cpu",
        factory: MLPFactory = mlp,
        seed: int | None = None,
    ):
        c = self._configure(cfg, IQLConfig, obs_dim, act_dim, device)
        with self.seeded_init(seed):
            self.actor = GaussianPolicy(
                obs_dim, act_dim, c.actor_hidden, c.activation, factory, c.log_std_min, c.log_std_max
            )
            self.critic = TwinQ(obs_dim, act_dim, c.critic_hidden, c.activation, factory)
            self.value = factory(obs_dim, 1, c.value_hidden, c.activation)
        self._finish_init(c.lr, seed, targets=("critic",))
        self.actor_sched = None
        if c.lr_schedule == "cosine":
            self.actor_sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.actor_opt, c.schedule_steps)

    # ------------------------------------------------------------------ contract
    def networks(self) -> dict[str, nn.Module]:
        return {"actor": self.actor, "critic": self.critic, "value": self.value}

    def targets(self) -> dict[str, nn.Module]:
        return {"critic": self.critic_target}

    # ------------------------------------------------------------------ losses
    @torch.no_grad()
    def target_q(self, obs: Tensor, act: Tensor) -> Tensor:
        q1, q2 = self.critic_target(obs, act)
        return torch.min(q1, q2)

    def value_loss(self, obs: Tensor, target_q: Tensor) -> tuple[Tensor, Tensor]:
        v = self.value(obs)
        return self._scale(expectile_loss(target_q - v, self.cfg.expectile)), v

    def critic_loss(self, obs, act, rew, next_obs, done) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            y = rew + (1.0 - done) * self.cfg.gamma * self.value(next_obs)
        q1, q2 = self.critic(obs, act)
        return self._scale((q1 - y).pow(2).mean() + (q2 - y).pow(2).mean()), q1

    def actor_loss(self, obs: Tensor, act: Tensor, target_q: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            adv = target_q - self.value(obs)
            weight = torch.exp(self.cfg.beta * adv).clamp(max=self.cfg.max_weight)
        return self._scale(-(weight * self.actor.log_prob(obs, act)).mean()), adv

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        obs, act, rew, next_obs, done = self._batch(batch)
        tq = self.target_q(obs, act)
        return {
            "critic": self.critic_loss(obs, act, rew, next_obs, done)[0],
            "actor": self.actor_loss(obs, act, tq)[0],
            "value": self.value_loss(obs, tq)[0],
        }

    # ------------------------------------------------------------------ update
    def update(self, batch: Batch) -> dict[str, float]:
        obs, act, rew, next_obs, done = self._batch(batch)
        tq = self.target_q(obs, act)
        value_loss, v = self.value_loss(obs, tq)
        self._step(self.value_opt, value_loss, self.value)

        actor_loss, adv = self.actor_loss(obs, act, tq)
        self._step(self.actor_opt, actor_loss, self.actor)
        if self.actor_sched is not None:
            self.actor_sched.step()

        critic_loss, q1 = self.critic_loss(obs, act, rew, next_obs, done)
        self._step(self.critic_opt, critic_loss, self.critic)

        soft_update(self.critic_target, self.critic, self.cfg.tau)
        self.num_updates += 1
        return scalars(
            {
                "loss/value": value_loss.detach(),
                "loss/critic": critic_loss.detach(),
                "loss/actor": actor_loss.detach(),
                "q/mean": q1.detach().mean(),
                "v/mean": v.detach().mean(),
                "adv/mean": adv.mean(),
            }
        )

    @torch.no_grad()
    def act(self, obs: Tensor, deterministic: bool = True) -> Tensor:
        """``obs [..., obs_dim] → [..., act_dim]`` in [-1, 1]: the mean, or a clipped sample."""
        mean, log_std = self.actor(obs.to(self.device))
        if deterministic:
            return mean.clamp(-1.0, 1.0)
        eps = torch.randn(mean.shape, generator=self.generator, device=mean.device, dtype=mean.dtype)
        return (mean + log_std.exp() * eps).clamp(-1.0, 1.0)

    # ------------------------------------------------------------------ state
    def _extra_state(self) -> dict:
        return {"actor_sched": None if self.actor_sched is None else self.actor_sched.state_dict()}

    def _load_extra_state(self, state: dict) -> None:
        if self.actor_sched is not None and state.get("actor_sched") is not None:
            self.actor_sched.load_state_dict(state["actor_sched"])

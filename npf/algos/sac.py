"""Soft Actor-Critic (Haarnoja et al. 2018): twin Q, tanh-Gaussian policy, learned temperature,
delayed policy updates. Written once over plain networks; masks and task conditioning are added
from outside (see npf.pathways / npf.multitask)."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from npf.algos.base import Algorithm, Batch, load_optimizer, make_optimizer, scalars
from npf.algos.hparams import from_dict, hp
from npf.nets import ACTIVATIONS, MLPFactory, TanhGaussianPolicy, TwinQ, mlp, soft_update


@dataclass
class SACConfig:
    hidden: list[int] = hp([256, 256], ge=1)
    """hidden layer widths of the actor and of each Q network"""
    activation: str = hp("relu", choices=list(ACTIVATIONS))
    """activation of the hidden layers"""
    lr: float = hp(1e-3, gt=0)
    """Adam learning rate of actor, critic and temperature"""
    batch_size: int = hp(256, ge=1)
    """transitions per update (per task in multitask training)"""
    gamma: float = hp(0.99, ge=0, le=1)
    """discount factor"""
    tau: float = hp(5e-3, gt=0, le=1)
    """Polyak rate of the target critic"""
    policy_delay: int = hp(2, ge=1)
    """critic updates per actor and temperature update"""
    init_temperature: float = hp(1.0, gt=0)
    """initial entropy temperature α"""
    target_entropy: float | None = hp(None)
    """entropy target of the temperature loss; null: −act_dim"""
    optimizer: str = hp("adam", choices=["adam", "adamw"])
    """adam, or adamw (MT10 online)"""

    @classmethod
    def from_dict(cls, d: dict | None, where: str = "sac") -> SACConfig:
        return from_dict(cls, d, where)


class SAC(Algorithm):
    roles = ("actor", "critic")
    compilable = ("_critic_loss_fn", "_actor_loss_fn")

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        cfg: SACConfig,
        device: torch.device | str = "cpu",
        factory: MLPFactory = mlp,
        num_temperatures: int | None = None,
        seed: int | None = None,
    ):
        self.cfg, self.device = cfg, torch.device(device)
        if seed is not None:
            torch.manual_seed(seed)
        self.actor = TanhGaussianPolicy(obs_dim, act_dim, cfg.hidden, cfg.activation, factory).to(self.device)
        self.critic = TwinQ(obs_dim, act_dim, cfg.hidden, cfg.activation, factory).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        # One temperature, or one per task ([N, 1, 1], broadcasting over [N, B, 1]) for MT-SAC.
        shape = (1,) if num_temperatures is None else (num_temperatures, 1, 1)
        self.log_alpha = torch.full(
            shape, float(torch.log(torch.tensor(cfg.init_temperature))), device=self.device, requires_grad=True
        )
        self.target_entropy = -float(act_dim) if cfg.target_entropy is None else cfg.target_entropy
        self.actor_act_dim = act_dim
        self.actor_opt = make_optimizer(cfg.optimizer, self.actor.parameters(), cfg.lr)
        self.critic_opt = make_optimizer(cfg.optimizer, self.critic.parameters(), cfg.lr)
        self.alpha_opt = make_optimizer(cfg.optimizer, [self.log_alpha], cfg.lr)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(0 if seed is None else seed)
        self.num_updates = 0

    def networks(self):
        return {"actor": self.actor, "critic": self.critic}

    def targets(self):
        return {"critic": self.critic_target}

    @property
    def alpha(self) -> Tensor:
        return self.log_alpha.exp()

    def _noise(self, obs: Tensor) -> Tensor:
        """The policy's standard normal noise for ``obs [..., obs_dim]``, from the own generator."""
        return torch.randn(
            (*obs.shape[:-1], self.actor_act_dim), generator=self.generator, device=obs.device, dtype=obs.dtype
        )

    def _critic_loss(self, batch: Batch, eps: Tensor | None = None) -> tuple[Tensor, Tensor]:
        eps = self._noise(batch["next_obs"]) if eps is None else eps
        return self._critic_loss_fn(batch, eps)

    def _critic_loss_fn(self, batch: Batch, eps: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            next_a, next_logp = self.actor(batch["next_obs"], eps=eps)
            tq1, tq2 = self.critic_target(batch["next_obs"], next_a)
            target_v = torch.min(tq1, tq2) - self.alpha.detach() * next_logp
            y = batch["rew"] + self.cfg.gamma * (1.0 - batch["done"]) * target_v
        q1, q2 = self.critic(batch["obs"], batch["act"])
        loss = (F.mse_loss(q1, y) + F.mse_loss(q2, y)) * self.loss_scale
        return loss, q1

    def _actor_loss(self, batch: Batch, eps: Tensor | None = None) -> tuple[Tensor, Tensor]:
        eps = self._noise(batch["obs"]) if eps is None else eps
        return self._actor_loss_fn(batch, eps)

    def _actor_loss_fn(self, batch: Batch, eps: Tensor) -> tuple[Tensor, Tensor]:
        a, logp = self.actor(batch["obs"], eps=eps)
        q1, q2 = self.critic(batch["obs"], a)
        loss = (self.alpha.detach() * logp - torch.min(q1, q2)).mean() * self.loss_scale
        return loss, logp

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        return {"critic": self._critic_loss(batch)[0], "actor": self._actor_loss(batch)[0]}

    def update(self, batch: Batch) -> dict[str, float]:
        critic_loss, q1 = self._critic_loss(batch)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        metrics = {"loss/critic": critic_loss.detach(), "q/mean": q1.detach().mean()}

        if self.num_updates % self.cfg.policy_delay == 0:
            self.critic.requires_grad_(False)
            actor_loss, logp = self._actor_loss(batch)
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_opt.step()
            self.critic.requires_grad_(True)
            # Per-task temperature: reduce over every axis but the temperature's own.
            alpha_loss = (-self.log_alpha * (logp.detach() + self.target_entropy)).mean() * self.loss_scale
            self.alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_opt.step()
            metrics.update(
                {
                    "loss/actor": actor_loss.detach(),
                    "loss/alpha": alpha_loss.detach(),
                    "alpha": self.alpha.detach().mean(),
                    "entropy": -logp.detach().mean(),
                }
            )
        soft_update(self.critic_target, self.critic, self.cfg.tau)
        self.num_updates += 1
        return scalars(metrics)

    @torch.no_grad()
    def act(self, obs: Tensor, deterministic: bool = True) -> Tensor:
        a, _ = self.actor(obs, deterministic=deterministic, with_log_prob=False, generator=self.generator)
        return a

    def state_dict(self) -> dict:
        return {
            "config": asdict(self.cfg),
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "alpha_opt": self.alpha_opt.state_dict(),
            "generator": self.generator.get_state(),
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        for name in ("actor_opt", "critic_opt", "alpha_opt"):
            load_optimizer(getattr(self, name), state[name])
        self.generator.set_state(state["generator"])
        self.num_updates = int(state["num_updates"])

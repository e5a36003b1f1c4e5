"""Batch-Constrained deep Q-learning, continuous version (Fujimoto, Meger & Precup, 2019).

Reads top to bottom like the reference implementation (github.com/sfujim/BCQ, ``BCQ.py``):

* a conditional VAE G(s) models the behaviour policy (latent = 2·act_dim; at sampling the prior
  latent is clipped to [-0.5, 0.5]; loss = MSE reconstruction + 0.5·KL);
* a perturbation actor ξ_φ(s, a) = Φ·tanh(f(s, a)) (Φ = 0.05) nudges a VAE action, clipped to [-1, 1];
* twin critics are trained towards r + γ(1 − done)·max_j [λ·min(Q'1, Q'2) + (1 − λ)·max(Q'1, Q'2)]
  over ``num_samples`` perturbed VAE actions per next state (λ = 0.75);
* the actor maximises Q1(s, ξ(s, G(s))); target actor and critic follow by Polyak averaging.

Actions live in [-1, 1] (max_action = 1). Batch tensors may carry any leading dims
``[..., B, d]``; in multitask training the first one is the task axis and the networks may have
pathway masks attached by other code. The ``num_samples`` repeated actions are therefore laid out
along the batch axis (-2), ``[..., B·S, d]``, so the task axis always stays first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from npf.algos.base import Algorithm, Batch, scalars
from npf.algos.hparams import from_dict, hp
from npf.nets import ACTIVATIONS, MLPFactory, TwinQ, mlp, soft_update


@dataclass
class BCQConfig:
    lr: float = hp(1e-3, gt=0)
    """Adam learning rate of actor, critic and VAE"""
    gamma: float = hp(0.99, ge=0, le=1)
    """discount factor"""
    tau: float = hp(5e-3, gt=0, le=1)
    """Polyak rate of the target actor and critic"""
    actor_hidden: list[int] = hp([400, 300], ge=1)
    """hidden layer widths of the perturbation actor"""
    critic_hidden: list[int] = hp([400, 300], ge=1)
    """hidden layer widths of each Q network"""
    vae_hidden: list[int] = hp([750, 750], ge=1)
    """hidden layer widths of the VAE's encoder and decoder"""
    phi: float = hp(0.05, ge=0)
    """perturbation range Φ (× max_action = 1)"""
    lmbda: float = hp(0.75, ge=0, le=1)
    """clipped double-Q weight λ"""
    num_samples: int = hp(10, ge=1)
    """VAE actions per state, for the target and for action selection"""
    kl_weight: float = hp(0.5, ge=0)
    """VAE loss = reconstruction + kl_weight · KL (reference code)"""
    latent_clip: float = hp(0.5, gt=0)
    """prior latent clipped to [-c, c] when decoding without an encoder"""
    activation: str = hp("relu", choices=list(ACTIVATIONS))
    """activation of the hidden layers (the authors used tanh for the MuJoCo offline networks)"""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, where: str = "bcq") -> BCQConfig:
        return from_dict(cls, d, where)


class VAE(nn.Module):
    """Conditional VAE over actions: encoder (s, a) → (μ, log σ) of z, decoder (s, z) → tanh action."""

    def __init__(self, obs_dim: int, act_dim: int, hidden, activation: str = "relu", factory: MLPFactory = mlp):
        super().__init__()
        self.latent_dim = 2 * act_dim
        # One output layer for [μ, log σ] (the reference's two heads, concatenated).
        self.encoder = factory(obs_dim + act_dim, 2 * self.latent_dim, hidden, activation)
        self.decoder = factory(obs_dim + self.latent_dim, act_dim, hidden, activation, "tanh")

    def encode(self, obs: Tensor, act: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_std = self.encoder(torch.cat([obs, act], dim=-1)).chunk(2, dim=-1)
        return mean, log_std.clamp(-4.0, 15.0)

    def decode(self, obs: Tensor, z: Tensor) -> Tensor:
        return self.decoder(torch.cat([obs, z], dim=-1))

    def forward(self, obs: Tensor, act: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Reconstruction with the reparameterised latent μ + σ·eps; returns (recon, μ, σ)."""
        mean, log_std = self.encode(obs, act)
        std = log_std.exp()
        return self.decode(obs, mean + std * eps), mean, std


class Perturbation(nn.Module):
    """ξ_φ(s, a) = clip(a + Φ·tanh(f(s, a)), -1, 1)."""

    def __init__(
        self, obs_dim: int, act_dim: int, hidden, phi: float, activation: str = "relu", factory: MLPFactory = mlp
    ):
        super().__init__()
        self.phi = phi
        self.net = factory(obs_dim + act_dim, act_dim, hidden, activation, "tanh")

    def forward(self, obs: Tensor, act: Tensor) -> Tensor:
        delta = self.phi * self.net(torch.cat([obs, act], dim=-1))
        return (act + delta).clamp(-1.0, 1.0)


class BCQ(Algorithm):
    roles = ("actor", "critic", "vae")
    compilable = ("_vae_loss_fn", "_critic_loss_fn", "_actor_loss_fn")

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        cfg: BCQConfig | Mapping | None = None,
        device: str | torch.device = "cpu",
        factory: MLPFactory = mlp,
        seed: int | None = None,
    ):
        c = self._configure(cfg, BCQConfig, obs_dim, act_dim, device)
        with self.seeded_init(seed):
            self.actor = Perturbation(obs_dim, act_dim, c.actor_hidden, c.phi, c.activation, factory)
            self.critic = TwinQ(obs_dim, act_dim, c.critic_hidden, c.activation, factory)
            self.vae = VAE(obs_dim, act_dim, c.vae_hidden, c.activation, factory)
        self._finish_init(c.lr, seed, targets=("actor", "critic"))

    # ------------------------------------------------------------------ contract
    def networks(self) -> dict[str, nn.Module]:
        return {"actor": self.actor, "critic": self.critic, "vae": self.vae}

    def targets(self) -> dict[str, nn.Module]:
        return {"actor": self.actor_target, "critic": self.critic_target}

    # ------------------------------------------------------------------ sampling
    def _randn(self, shape, like: Tensor) -> Tensor:
        return torch.randn(shape, generator=self.generator, device=like.device, dtype=like.dtype)

    def _latent(self, rows: tuple, like: Tensor, clip: bool) -> Tensor:
        """Standard normal latents ``[*rows, latent_dim]``, clipped to the prior's range when ``clip``.
        (Drawn outside the loss functions so that those stay free of RNG state, for torch.compile.)"""
        z = self._randn((*rows, self.vae.latent_dim), like)
        return z.clamp(-self.cfg.latent_clip, self.cfg.latent_clip) if clip else z

    def _sample_vae_actions(self, obs: Tensor, z: Tensor | None = None) -> Tensor:
        """G(s): decode a latent from the clipped prior (``z``, drawn when None), for every row of
        ``obs [..., d]``."""
        return self.vae.decode(obs, self._latent(obs.shape[:-1], obs, clip=True) if z is None else z)

    # ------------------------------------------------------------------ losses
    def vae_loss(self, obs: Tensor, act: Tensor) -> Tensor:
        return self._vae_loss_fn(obs, act, self._latent(obs.shape[:-1], obs, clip=False))

    def _vae_loss_fn(self, obs: Tensor, act: Tensor, eps: Tensor) -> Tensor:
        recon, mean, std = self.vae(obs, act, eps)
        recon_loss = (recon - act).pow(2).mean()
        kl = -0.5 * (1 + torch.log(std.pow(2)) - mean.pow(2) - std.pow(2)).mean()
        return self._scale(recon_loss + self.cfg.kl_weight * kl)

    @torch.no_grad()
    def critic_target_value(self, rew: Tensor, next_obs: Tensor, done: Tensor, z: Tensor | None = None) -> Tensor:
        """y = r + γ(1 − done)·max_j [λ min(Q'1, Q'2) + (1 − λ) max(Q'1, Q'2)](s', ξ'(s', G(s'))_j);
        ``z``: the prior latents ``[..., B·S, latent]`` of the S samples (drawn when None)."""
        c = self.cfg
        s = c.num_samples
        lead, b = next_obs.shape[:-2], next_obs.shape[-2]
        rep = torch.repeat_interleave(next_obs, s, dim=-2)  # [..., B·S, d]
        q1, q2 = self.critic_target(rep, self.actor_target(rep, self._sample_vae_actions(rep, z)))
        q = c.lmbda * torch.min(q1, q2) + (1.0 - c.lmbda) * torch.max(q1, q2)  # [..., B·S, 1]
        q = q.reshape(*lead, b, s).max(dim=-1, keepdim=True).values  # [..., B, 1]
        return rew + (1.0 - done) * c.gamma * q

    def critic_loss(self, obs, act, rew, next_obs, done) -> tuple[Tensor, Tensor]:
        rows = (*next_obs.shape[:-2], next_obs.shape[-2] * self.cfg.num_samples)
        return self._critic_loss_fn(obs, act, rew, next_obs, done, self._latent(rows, next_obs, clip=True))

    def _critic_loss_fn(self, obs, act, rew, next_obs, done, z: Tensor) -> tuple[Tensor, Tensor]:
        y = self.critic_target_value(rew, next_obs, done, z)
        q1, q2 = self.critic(obs, act)
        loss = (q1 - y).pow(2).mean() + (q2 - y).pow(2).mean()
        return self._scale(loss), q1

    def actor_loss(self, obs: Tensor) -> Tensor:
        return self._actor_loss_fn(obs, self._latent(obs.shape[:-1], obs, clip=True))

    def _actor_loss_fn(self, obs: Tensor, z: Tensor) -> Tensor:
        with torch.no_grad():
            sampled = self._sample_vae_actions(obs, z)
        q1, _ = self.critic(obs, self.actor(obs, sampled))
        return self._scale(-q1.mean())

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        obs, act, rew, next_obs, done = self._batch(batch)
        return {
            "critic": self.critic_loss(obs, act, rew, next_obs, done)[0],
            "actor": self.actor_loss(obs),
            "vae": self.vae_loss(obs, act),
        }

    # ------------------------------------------------------------------ update
    def update(self, batch: Batch) -> dict[str, float]:
        obs, act, rew, next_obs, done = self._batch(batch)
        vae_loss = self.vae_loss(obs, act)
        self._step(self.vae_opt, vae_loss, self.vae)

        critic_loss, q1 = self.critic_loss(obs, act, rew, next_obs, done)
        self._step(self.critic_opt, critic_loss, self.critic)

        actor_loss = self.actor_loss(obs)
        self._step(self.actor_opt, actor_loss, self.actor)

        soft_update(self.critic_target, self.critic, self.cfg.tau)
        soft_update(self.actor_target, self.actor, self.cfg.tau)
        self.num_updates += 1
        return scalars(
            {
                "loss/vae": vae_loss.detach(),
                "loss/critic": critic_loss.detach(),
                "loss/actor": actor_loss.detach(),
                "q/mean": q1.detach().mean(),
            }
        )

    @torch.no_grad()
    def act(self, obs: Tensor, deterministic: bool = True) -> Tensor:
        """Sample ``num_samples`` VAE actions per state, perturb them, return the argmax-Q1 one.

        ``obs [..., obs_dim] → [..., act_dim]``. Selection is stochastic through the VAE samples
        either way (as in BCQ); ``deterministic`` is accepted for the common interface.
        """
        obs = obs.to(self.device)
        s = self.cfg.num_samples
        rep = obs.unsqueeze(-2).expand(*obs.shape[:-1], s, obs.shape[-1])  # [..., S, d]
        a = self.actor(rep, self._sample_vae_actions(rep))  # [..., S, act]
        q1, _ = self.critic(rep, a)  # [..., S, 1]
        idx = q1.argmax(dim=-2, keepdim=True).expand(*a.shape[:-2], 1, a.shape[-1])
        return a.gather(-2, idx).squeeze(-2)

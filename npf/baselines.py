"""Online multitask baselines beyond task conditioning: PCGrad (Yu et al. 2020, "Gradient Surgery
for Multi-Task Learning") on top of MT-SAC.

PCGrad, for per-task gradients g_1 … g_N of the shared parameters: for each task i, for every
other task j in a random order, if g_i · g_j < 0 then g_i ← g_i − (g_i · g_j / ‖g_j‖²) g_j, where
g_i is the partly projected gradient and g_j the *original* gradient of task j; the update is the
sum of the projected gradients. :func:`pcgrad_projected` runs the N projection chains in
parallel (step k projects every g_i onto the k-th task of its own order), so there is no
host–device synchronisation per pair.

:class:`PCGradSAC` is MT-SAC (one-hot task id, one temperature per task) whose critic and actor
steps use the PCGrad combination of the per-task losses (each the mean over that task's batch).
The temperatures are per task, so their gradients never conflict and are stepped as in SAC.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from npf.algos.base import Batch
from npf.algos.sac import SAC
from npf.nets import soft_update


def pcgrad_orders(
    num_tasks: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> Tensor:
    """[N, N−1]: row i is a uniformly random order of the tasks other than i."""
    r = torch.rand(num_tasks, num_tasks, generator=generator, device=device)
    r.fill_diagonal_(2.0)  # task i itself sorts last, then is dropped
    return r.argsort(dim=1)[:, : num_tasks - 1]


def pcgrad_projected(grads: Tensor, generator: torch.Generator | None = None, orders: Tensor | None = None) -> Tensor:
    """Project each task's gradient ``grads[i]`` ([N, P]) away from the tasks it conflicts with;
    returns the projected gradients ``[N, P]``. ``orders`` ([N, N−1], row i a permutation of the
    other tasks) defaults to :func:`pcgrad_orders`."""
    n = grads.shape[0]
    if orders is None:
        orders = pcgrad_orders(n, generator, grads.device)
    out = grads.clone()
    sq = (grads * grads).sum(1)
    for k in range(n - 1):
        j = orders[:, k]
        gj = grads[j]  # [N, P]: for each i, the original gradient of its k-th task
        dot = (out * gj).sum(1)
        coef = torch.where(dot < 0, dot / sq[j].clamp_min(torch.finfo(grads.dtype).tiny), torch.zeros_like(dot))
        out -= coef.unsqueeze(1) * gj
    return out


def pcgrad(grads: Tensor, generator: torch.Generator | None = None, orders: Tensor | None = None) -> Tensor:
    """The PCGrad update direction: the sum of :func:`pcgrad_projected`."""
    return pcgrad_projected(grads, generator, orders).sum(0)


def conflict_fraction(grads: Tensor) -> float:
    """Share of task pairs (i < j) whose gradients conflict (g_i · g_j < 0)."""
    n = grads.shape[0]
    if n < 2:
        return 0.0
    dots = grads @ grads.t()
    iu = torch.triu_indices(n, n, 1, device=grads.device)
    return float((dots[iu[0], iu[1]] < 0).float().mean())


def _flat_grad(loss: Tensor, params: Sequence[torch.nn.Parameter]) -> Tensor:
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)])


def _assign_flat_grad(params: Sequence[torch.nn.Parameter], flat: Tensor) -> None:
    i = 0
    for p in params:
        n = p.numel()
        p.grad = flat[i : i + n].view_as(p).clone()
        i += n


class PCGradSAC(SAC):
    """MT-SAC with PCGrad on the actor and critic gradients. Build it like MT-SAC
    (``obs_dim + N`` inputs, ``num_temperatures=N``) and feed ``[N, B, ...]`` batches with the
    one-hot ids appended (:class:`npf.multitask.MultitaskLearner` with ``method="mt"``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        seed = kwargs.get("seed")
        self.pc_generator = torch.Generator(device=self.device)
        self.pc_generator.manual_seed(0x5EED if seed is None else seed + 0x5EED)

    @contextlib.contextmanager
    def _task(self, task: int) -> Iterator[None]:
        """Losses of one task's ``[B, ...]`` batch: its own temperature, no loss scaling."""
        la, scale = self.log_alpha, self.loss_scale
        self.log_alpha = la.detach()[task].reshape(1) if la.dim() >= 3 else la.detach()
        self.loss_scale = 1.0
        try:
            yield
        finally:
            self.log_alpha, self.loss_scale = la, scale

    def _task_grads(self, batch: Batch, which: str, params: list) -> tuple[Tensor, list]:
        n = batch["obs"].shape[0]
        grads, extra = [], []
        for i in range(n):
            b = {k: v[i] for k, v in batch.items()}
            with self._task(i):
                loss, aux = self._critic_loss(b) if which == "critic" else self._actor_loss(b)
            grads.append(_flat_grad(loss, params))
            extra.append((loss.detach(), aux.detach()))
        return torch.stack(grads), extra

    def update(self, batch: Batch) -> dict[str, float]:
        if batch["obs"].dim() < 3:
            raise ValueError("PCGradSAC.update needs [N, B, ...] batches (one row of the first axis per task)")
        cparams = [p for p in self.critic.parameters() if p.requires_grad]
        G, extra = self._task_grads(batch, "critic", cparams)
        self.critic_opt.zero_grad(set_to_none=True)
        _assign_flat_grad(cparams, pcgrad(G, self.pc_generator))
        self.critic_opt.step()
        metrics = {
            "loss/critic": float(torch.stack([e[0] for e in extra]).mean()),
            "q/mean": float(torch.stack([e[1].mean() for e in extra]).mean()),
            "pcgrad/critic_conflicts": conflict_fraction(G),
        }

        if self.num_updates % self.cfg.policy_delay == 0:
            self.critic.requires_grad_(False)
            aparams = list(self.actor.parameters())
            Ga, extra_a = self._task_grads(batch, "actor", aparams)
            self.actor_opt.zero_grad(set_to_none=True)
            _assign_flat_grad(aparams, pcgrad(Ga, self.pc_generator))
            self.actor_opt.step()
            self.critic.requires_grad_(True)
            logp = torch.stack([e[1] for e in extra_a])  # [N, B, 1]
            alpha_loss = (-self.log_alpha * (logp + self.target_entropy)).mean() * self.loss_scale
            self.alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_opt.step()
            metrics.update(
                {
                    "loss/actor": float(torch.stack([e[0] for e in extra_a]).mean()),
                    "loss/alpha": alpha_loss.item(),
                    "alpha": self.alpha.mean().item(),
                    "entropy": -logp.mean().item(),
                    "pcgrad/actor_conflicts": conflict_fraction(Ga),
                }
            )
        soft_update(self.critic_target, self.critic, self.cfg.tau)
        self.num_updates += 1
        return metrics

    def state_dict(self) -> dict:
        s = super().state_dict()
        s["pc_generator"] = self.pc_generator.get_state()
        return s

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if "pc_generator" in state:
            self.pc_generator.set_state(state["pc_generator"].cpu())

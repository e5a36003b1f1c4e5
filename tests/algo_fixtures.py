"""Shared test fixtures for the algorithm tests: random batches and a toy offline task."""
import torch


def random_batch(*lead, b=8, seed=0, obs=5, act=3, done_p=0.2) -> dict[str, torch.Tensor]:
    """A batch with arbitrary leading axes ``lead`` (e.g. a task axis) of ``b`` random transitions."""
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.randn(*lead, b, obs, generator=g),
        "act": torch.rand(*lead, b, act, generator=g) * 2 - 1,
        "rew": torch.randn(*lead, b, 1, generator=g),
        "next_obs": torch.randn(*lead, b, obs, generator=g),
        "done": (torch.rand(*lead, b, 1, generator=g) < done_p).float(),
    }


# Toy goal-reaching task: obs = [x, g] in R^2 x R^2, action a in [-1, 1]^2, x' = clip(x + 0.25a),
# reward −‖x' − g‖, 15 steps. The best action is known: (g − x)/0.25 clipped. Offline data:
# 400 episodes of a uniformly random policy + 100 of a noisy expert.
D, H, STEP = 2, 15, 0.25


def toy_reset(n, g):
    return torch.rand(n, 2 * D, generator=g) * 2 - 1


def toy_step(obs, a):
    x, goal = obs[:, :D], obs[:, D:]
    x2 = (x + STEP * a.clamp(-1, 1)).clamp(-2, 2)
    return torch.cat([x2, goal], -1), -(x2 - goal).norm(dim=-1, keepdim=True)


def toy_expert(obs):
    return ((obs[:, D:] - obs[:, :D]) / STEP).clamp(-1, 1)


def toy_rollout(policy, n, g):
    obs, ret, trans = toy_reset(n, g), torch.zeros(n, 1), []
    for _ in range(H):
        a = policy(obs)
        nobs, r = toy_step(obs, a)
        trans.append((obs, a, r, nobs))
        ret, obs = ret + r, nobs
    return ret.mean().item(), trans


def toy_dataset(g):
    rand = lambda o: torch.rand(o.shape[0], D, generator=g) * 2 - 1  # noqa: E731
    noisy = lambda o: (toy_expert(o) + 0.3 * torch.randn(o.shape[0], D, generator=g)).clamp(-1, 1)  # noqa: E731
    r_rand, tr = toy_rollout(rand, 400, g)
    r_noisy, te = toy_rollout(noisy, 100, g)
    cols = list(zip(*(tr + te)))
    data = {k: torch.cat(c) for k, c in zip(("obs", "act", "rew", "next_obs"), cols)}
    data["done"] = torch.zeros_like(data["rew"])
    return data, (400 * r_rand + 100 * r_noisy) / 500



def toy_learning(algo, updates: int):
    """Train ``algo`` offline on the toy dataset; returns (its return, dataset mean, random, expert)."""
    g = torch.Generator().manual_seed(0)
    data, data_mean = toy_dataset(g)
    eval_return = lambda pol: toy_rollout(pol, 200, torch.Generator().manual_seed(123))[0]  # noqa: E731
    random_return = eval_return(lambda o: torch.rand(o.shape[0], D, generator=g) * 2 - 1)
    expert_return = eval_return(toy_expert)
    m = data["obs"].shape[0]
    for _ in range(updates):
        idx = torch.randint(0, m, (256,), generator=g)
        algo.update({k: v[idx] for k, v in data.items()})
    return eval_return(algo.act), data_mean, random_return, expert_return

"""Shared test fixtures for the algorithm tests: random batches, parameter snapshots, the seeding
and resume checks every offline algorithm passes, and a toy offline task."""

import io

import torch

from npf.nets import MaskedLinear

OBS, ACT = 5, 3  # the unit tests' observation and action sizes


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


def snapshot(algo) -> dict[str, torch.Tensor]:
    """A copy of every parameter and buffer of the algorithm's networks and targets."""
    mods = {**algo.networks(), **{f"{k}_target": v for k, v in algo.targets().items()}}
    return {f"{k}.{n}": p.detach().clone() for k, m in mods.items() for n, p in m.state_dict().items()}


def masked_layers(algo):
    """Every MaskedLinear of the algorithm's networks and targets (where Pathways attaches masks)."""
    for m in [*algo.networks().values(), *algo.targets().values()]:
        yield from (mod for mod in m.modules() if isinstance(mod, MaskedLinear))


def check_seeding(make) -> None:
    """``make(seed=...)``: a seed fixes the init; without one, fresh draws that follow the global
    torch seed (the sampling generator included)."""
    w = lambda algo: algo.critic.q1[0].weight
    assert torch.equal(w(make(seed=5)), w(make(seed=5)))
    assert not torch.equal(w(make(seed=5)), w(make(seed=6)))
    assert not torch.equal(w(make(seed=None)), w(make(seed=None)))  # unseeded: fresh draws
    torch.manual_seed(1)
    a = make(seed=None)
    torch.manual_seed(1)
    b = make(seed=None)  # ... that follow the global torch seed, noise generator included
    assert torch.equal(w(a), w(b)) and torch.equal(a.generator.get_state(), b.generator.get_state())


def check_losses_and_update(algo, b) -> dict[str, float]:
    """Every role has a finite scalar loss on ``b``; one update returns float metrics (returned)."""
    losses = algo.losses(b)
    assert set(losses) == set(algo.roles)
    for k, v in losses.items():
        assert v.dim() == 0 and torch.isfinite(v), k
    metrics = algo.update(b)
    assert all(isinstance(v, float) for v in metrics.values())
    return metrics


def check_losses_change_nothing(algo) -> None:
    """``losses`` (used for SNIP saliency) steps no network, target or optimizer."""
    algo.update(random_batch(seed=1))
    before = snapshot(algo)
    opts = [getattr(algo, f"{role}_opt") for role in algo.roles]
    opt_before = [o.state_dict()["state"][0]["exp_avg"].clone() for o in opts]
    algo.losses(random_batch(seed=2))
    after = snapshot(algo)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(x, o.state_dict()["state"][0]["exp_avg"]) for x, o in zip(opt_before, opts))


def check_task_axis_with_masks(algo, n: int) -> dict[str, torch.Tensor]:
    """Masks on every MaskedLinear (as Pathways attaches them): [N, B, d] runs task-wise; all-ones
    masks reproduce the unmasked result; loss_scale multiplies every loss. Leaves random sparse
    masks attached, one update done; returns the ``[N, B, ...]`` batch for further checks."""
    b = random_batch(n)
    state = algo.generator.get_state()  # the same sampling noise for every loss evaluation
    plain = algo.losses(b)
    for layer in masked_layers(algo):
        layer.set_masks(torch.ones(n, *layer.weight.shape))
    algo.generator.set_state(state)
    ones = algo.losses(b)
    for k in plain:
        torch.testing.assert_close(ones[k], plain[k])
    algo.loss_scale = float(n)
    algo.generator.set_state(state)
    scaled = algo.losses(b)
    for k in plain:
        torch.testing.assert_close(scaled[k], n * plain[k])
    # Random sparse masks: every loss still finite, update and act run with the task axis first.
    g = torch.Generator().manual_seed(0)
    for layer in masked_layers(algo):
        layer.set_masks((torch.rand(n, *layer.weight.shape, generator=g) < 0.5).float())
    assert all(torch.isfinite(v) for v in algo.losses(b).values())
    algo.update(b)
    assert algo.act(b["obs"]).shape == (n, 8, ACT)
    return b


def check_multihead(algo, n: int) -> None:
    """An algorithm built with ``multihead_factory(n)`` trains and acts on ``[n, B, ...]`` batches."""
    b = random_batch(n)
    assert all(torch.isfinite(v) for v in algo.losses(b).values())
    algo.update(b)
    assert algo.act(b["obs"]).shape == (n, 8, ACT)


def resumed_pair(make, **kw):
    """Six updates straight through, and the same six with a state_dict round trip after three
    into an algorithm built with another seed; checks the networks are bit-identical and returns
    ``(full, resumed)`` for further checks."""
    batches = [random_batch(b=16, seed=s) for s in range(6)]
    full = make(seed=3, **kw)
    for bt in batches:
        full.update(bt)

    first = make(seed=3, **kw)
    for bt in batches[:3]:
        first.update(bt)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = make(seed=99, **kw)  # different init and noise: everything must come from the checkpoint
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    for bt in batches[3:]:
        resumed.update(bt)

    assert full.num_updates == resumed.num_updates == 6
    a, b = snapshot(full), snapshot(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return full, resumed


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
    rand = lambda o: torch.rand(o.shape[0], D, generator=g) * 2 - 1
    noisy = lambda o: (toy_expert(o) + 0.3 * torch.randn(o.shape[0], D, generator=g)).clamp(-1, 1)
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
    eval_return = lambda pol: toy_rollout(pol, 200, torch.Generator().manual_seed(123))[0]
    random_return = eval_return(lambda o: torch.rand(o.shape[0], D, generator=g) * 2 - 1)
    expert_return = eval_return(toy_expert)
    m = data["obs"].shape[0]
    for _ in range(updates):
        idx = torch.randint(0, m, (256,), generator=g)
        algo.update({k: v[idx] for k, v in data.items()})
    return eval_return(algo.act), data_mean, random_return, expert_return

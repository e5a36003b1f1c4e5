"""Opening an online run: its envs, agent, buffers and evaluator, continued from ``checkpoint.pt``
when there is one (a mid-episode checkpoint's episode is replayed to rebuild the simulators)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from npf import checkpoint as ckpt
from npf.config import pathway_backend
from npf.envs import episode_length, make_env
from npf.nets import resolve_device
from npf.online.agent import OnlineAgent
from npf.online.evaluate import PeriodicEvaluator
from npf.online.run_state import OnlineRun, restore
from npf.online.settings import OnlineSettings
from npf.online.tidy import GRAD_FIELDS, score_fields, write_csv
from npf.online_buffers import ChunkStore, TaskReplay
from npf.preemption import ResumableRun
from npf.rollout import EnvPool


def open_run(
    cfg: Mapping,
    suite: str,
    tasks: Sequence[str],
    method: str,
    seed: int,
    settings: OnlineSettings,
    out_dir: str | Path,
    run_name: str,
    stop_after_steps: int | None,
) -> OnlineRun:
    """Build a run's envs, agent and buffers; continue from ``checkpoint.pt`` when there is one."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.get("device", "auto"))
    torch.set_num_threads(int(cfg.get("torch_threads", 1)))
    ckpt.seed_everything(seed)
    tasks = list(tasks)
    per_task = settings.envs_per_task
    envs = [make_env(suite, t) for t in tasks for _ in range(per_task)]
    dims = {(e.observation_space.shape[0], e.action_space.shape[0]) for e in envs}
    if len(dims) != 1:
        raise ValueError(f"suite {suite}: tasks have different observation/action sizes {sorted(dims)}")
    obs_dim, act_dim = dims.pop()
    n = len(tasks)
    agent = OnlineAgent(
        method, n, obs_dim, act_dim, settings, device, seed, settings.threshold(suite), pathway_backend(cfg)
    )
    agent.shared.set_compile(cfg.get("compile", "off"), cfg.get("fused_adam", False))
    if agent.copies is not None:  # the pretraining copies stay eager; only their optimizer kernel follows
        agent.copies.set_compile("off", cfg.get("fused_adam", False))
    replay = TaskReplay(n, settings.replay_capacity, obs_dim, act_dim, device)
    dapd_buffer = TaskReplay(n, settings.td_episodes * episode_length(suite) * per_task, obs_dim, act_dim, device)
    sampler = torch.Generator(device=device)
    sampler.manual_seed(seed + 17)
    run = OnlineRun(
        suite=suite,
        tasks=tasks,
        method=method,
        seed=seed,
        settings=settings,
        out_dir=out_dir,
        device=device,
        obs_dim=obs_dim,
        act_dim=act_dim,
        agent=agent,
        replay=replay,
        dapd_buffer=dapd_buffer,
        replay_store=ChunkStore(out_dir / "replay"),
        sampler=sampler,
        resumable=ResumableRun(
            run_name,
            out_dir / "checkpoint.pt",
            settings.checkpoint_every,
            settings.total_steps,
            stop_after=stop_after_steps,
        ),
        envs=envs,
        episodes=[0] * (n * per_task),
        recent_returns=[[] for _ in range(n)],
    )
    if run.checkpoint_path.exists():
        restore(run, ckpt.load(run.checkpoint_path, map_location="cpu"))
    else:
        run.replay_store.prune([])
    run.pool = EnvPool(envs, seed, run.episodes, record_episodes=True)
    run.pool.reset()
    run.obs = run.pool.restore_mid_episode(run.mid_episode, run.checkpoint_path)
    run.evaluator = PeriodicEvaluator(
        suite, tasks, settings.eval_episodes, 1000 + seed, int(cfg.get("evaluation", {}).get("envs_per_task", 10))
    )
    write_csv(run.metrics_path, run.eval_rows, score_fields(tasks))
    if agent.npf:
        write_csv(run.grads_path, run.grad_rows, GRAD_FIELDS)
    return run

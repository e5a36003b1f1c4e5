"""Stage ``experts``: train a single-task SAC expert, resumable, tracked in MLflow.

Outputs (in ``out_dir``): ``policy.pt`` (actor weights + what is needed to rebuild it),
``metrics.json``. Working files: ``checkpoint.pt`` (full resumable state, written every
``checkpoint_every`` env steps), ``mlflow_run_id.txt`` (+ its tracking spool).

Preemption: on SIGTERM a checkpoint is written after the current env step and its updates, even
mid-episode, and :class:`npf.preemption.Preempted` is raised (exit 75 through the stage wrapper).
A checkpoint written mid-episode also holds each env's actions since its episode began: the resume
resets the envs with the episodes' seeds and replays them (:meth:`npf.rollout.EnvPool.restore_mid_episode`),
which brings back the simulators' state without saving it, also when the envs' episodes end at
different steps. A resume from it is bit-identical to an uninterrupted run. A NaN/inf loss or
network weight stops the job (FloatingPointError naming the loss/tensor and the step); the last
good checkpoint is never overwritten.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from npf import checkpoint as ckpt
from npf import layout
from npf.algos.base import check_finite
from npf.algos.sac import SAC, SACConfig
from npf.config import section
from npf.data import ReplayBuffer, write_json
from npf.envs import BUILTIN_SUITES, make_env
from npf.expert_policy import save_expert_policy
from npf.nets import resolve_device
from npf.preemption import ResumableRun, one_line
from npf.progress import Progress
from npf.render import render_in_subprocess
from npf.rollout import EnvPool, evaluate_policy
from npf.tracking import stage_tracker


def train_expert(
    cfg: dict, suite: str, task: str, seed: int, out_dir: str | Path, stop_after_steps: int | None = None
) -> dict:
    """Train (or resume) one expert. ``stop_after_steps`` simulates a kill (tests only)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ecfg = section(cfg, "experts", suite)
    device = resolve_device(cfg.get("device", "auto"))
    torch.set_num_threads(int(cfg.get("torch_threads", 1)))
    sac_cfg = SACConfig.from_dict(ecfg["sac"], "experts.sac")
    num_envs, total = int(ecfg["num_envs"]), int(ecfg["total_steps"])
    envs = [make_env(suite, task) for _ in range(num_envs)]
    obs_dim = envs[0].observation_space.shape[0]
    act_dim = envs[0].action_space.shape[0]
    low, high = envs[0].action_space.low, envs[0].action_space.high

    ckpt.seed_everything(seed)
    algo = SAC(obs_dim, act_dim, sac_cfg, device, seed=seed)
    algo.set_compile(cfg.get("compile", "off"), cfg.get("fused_adam", False))
    buffer = ReplayBuffer(min(int(ecfg["buffer_size"]), total), obs_dim, act_dim, device)
    rng = torch.Generator(device=device)
    rng.manual_seed(seed + 1)
    step, episodes, update_debt = 0, [0] * num_envs, 0.0
    ckpt_path = out_dir / layout.CHECKPOINT_FILE
    resuming = ckpt_path.exists()
    if resuming:
        state = ckpt.load(ckpt_path, map_location=device)
        try:
            algo.load_state_dict(state["algo"])
            buffer.load_state_dict(state["buffer"])
            rng.set_state(state["rng"].cpu() if device.type == "cpu" else state["rng"])
            ckpt.set_rng_state(state["global_rng"])
            step, episodes = int(state["step"]), list(state["episodes"])
            update_debt = float(state["update_debt"])
            if len(episodes) != num_envs:
                raise ValueError(f"{len(episodes)} envs in the checkpoint, experts.num_envs is {num_envs}")
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ckpt.CheckpointError(
                f"{ckpt_path}: cannot resume from this checkpoint, it does not match the "
                f"configured expert ({one_line(e)})"
            ) from None
    pool = EnvPool(envs, seed, episodes, record_episodes=True)
    obs = pool.reset()
    if resuming:
        obs = pool.restore_mid_episode(state, ckpt_path)

    tracker = stage_tracker(
        cfg,
        "experts",
        suite,
        f"expert/{suite}/{task}/seed{seed}",
        out_dir / layout.RUN_ID_FILE,
        {"suite": suite, "task": task, "seed": seed},
        fresh=not resuming,
    )
    progress = Progress(total, f"expert {suite}/{task}/s{seed}", initial=step)
    learning_starts = int(ecfg["learning_starts"])
    updates_per_step = float(ecfg["updates_per_step"])
    log_every = max(int(ecfg.get("log_every", 1000)), num_envs)
    t_env = t_upd = 0.0
    recent: list[float] = [float(r) for r in state.get("recent", [])] if resuming else []
    resumable = ResumableRun(
        f"expert {suite}/{task} seed {seed}",
        ckpt_path,
        int(ecfg["checkpoint_every"]),
        total,
        stop_after=stop_after_steps,
    )
    if resuming:
        resumable.resumed(step)
    with resumable.running(tracker, lambda: step, closing=(pool,)):
        while step < total:
            t0 = time.perf_counter()
            if step < learning_starts:
                u = torch.rand((num_envs, act_dim), generator=rng, device=device).cpu().numpy()
                actions = low + u * (high - low)
            else:
                with torch.no_grad():
                    actions = algo.act(torch.as_tensor(obs, device=device), deterministic=False).cpu().numpy()
            res = pool.step(actions)
            buffer.add(obs=obs, act=actions, rew=res.reward, next_obs=res.final_obs, done=res.terminated)
            obs = res.next_obs
            step += num_envs
            t1 = time.perf_counter()
            metrics: dict[str, float] = {}
            if step >= learning_starts:
                update_debt += num_envs * updates_per_step
                while update_debt >= 1:
                    metrics = algo.update(buffer.sample(sac_cfg.batch_size, rng))
                    update_debt -= 1
                if metrics:
                    check_finite(metrics, algo.num_updates)
            t_env += t1 - t0
            t_upd += time.perf_counter() - t1
            for _, ret, _length, _ in res.finished:
                recent = ([*recent, ret])[-10:]
            if res.finished:  # one value per step: envs finishing together are averaged
                tracker.log_metrics({"train/episode_return": float(np.mean([f[1] for f in res.finished]))}, step)
            if metrics and step % log_every < num_envs:
                tracker.log_metrics(metrics, step)
            progress.update(num_envs, ret=np.mean(recent) if recent else float("nan"))
            if resumable.due(step):
                if resumable.interval_due(step):  # not a SIGTERM's extra checkpoint
                    tracker.log_metrics(
                        {
                            "rate/env_steps_per_s": progress.rate,
                            "rate/updates_per_s": algo.num_updates / max(t_upd, 1e-9),
                        },
                        step,
                    )
                tracker.flush()  # before the checkpoint: metrics up to it are never lost (resume re-logs the rest)
                state = {
                    "algo": algo.state_dict(),
                    "buffer": buffer.state_dict(),
                    "rng": rng.get_state(),
                    "global_rng": ckpt.rng_state(),
                    "step": step,
                    "episodes": pool.episodes,
                    "update_debt": update_debt,
                    "recent": recent,
                    **pool.mid_episode_state(),  # a resume replays the episodes so far
                }
                resumable.save(state, step, skip=("buffer",))
                if resumable.stop_here(step):
                    return {"stopped_at": step}
        progress.close()
        resumable.stop_before_final(step)  # before the (long) final evaluation
        eval_envs = [make_env(suite, task) for _ in range(min(int(ecfg["eval_episodes"]), 10))]
        ev = evaluate_policy(
            lambda o: algo.act(torch.as_tensor(o, device=device)).cpu().numpy(),
            eval_envs,
            int(ecfg["eval_episodes"]),
            seed=10_000 + seed,
        )
        result = {
            "suite": suite,
            "task": task,
            "seed": seed,
            "env_steps": step,
            "updates": algo.num_updates,
            "eval_return_mean": float(ev["returns"].mean()),
            "eval_return_std": float(ev["returns"].std()),
            "eval_success": float(ev["success"].mean()),
            "train_return_last10": float(np.mean(recent)) if recent else None,
            "env_steps_per_s": progress.rate,
        }
        tracker.log_metrics({"eval/return": result["eval_return_mean"], "eval/success": result["eval_success"]}, step)
        save_expert_policy(out_dir / layout.POLICY_FILE, algo, obs_dim, act_dim, result)
        tracker.log_artifact(out_dir / layout.POLICY_FILE)
        write_json(out_dir / layout.EXPERT_METRICS_FILE, result)
        tracker.log_artifact(out_dir / layout.EXPERT_METRICS_FILE)
        if int(ecfg.get("render_steps", 0)) > 0:  # see the gait in the MLflow UI
            custom = None if suite in BUILTIN_SUITES else cfg["custom_suites"][suite]
            for p in render_in_subprocess(
                out_dir / layout.POLICY_FILE,
                suite,
                task,
                out_dir / "rollout",
                int(ecfg["render_steps"]),
                seed=10_000 + seed,
                custom_suite=custom,
            ):
                tracker.log_artifact(p, "rollout")
        resumable.status = "FINISHED"
        return result

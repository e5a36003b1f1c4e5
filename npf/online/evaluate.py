"""Evaluation of online runs: the periodic in-loop evaluation and stage ``online_evaluate``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from npf import checkpoint as ckpt
from npf import layout
from npf.algos.sac import SACConfig
from npf.config import pathway_backend
from npf.envs import is_success_suite, make_env
from npf.evaluate import evaluate_tasks, publish_evaluation
from npf.nets import resolve_device
from npf.online.agent import OnlineAgent, cpu_generators, numpy_policy
from npf.online.settings import online_settings, online_tasks
from npf.pathways import Pathways
from npf.rollout import evaluate_policy
from npf.tracking import stage_tracker


class PeriodicEvaluator:
    """Periodic evaluation with persistent envs (``eval_episodes`` per task, deterministic policy)."""

    def __init__(self, suite: str, tasks: Sequence[str], episodes: int, seed: int, envs_per_task: int = 10):
        self.suite, self.tasks, self.episodes, self.seed = suite, list(tasks), episodes, seed
        e = min(episodes, envs_per_task)
        self.e = e if episodes % e == 0 else episodes
        self.envs = None

    def __call__(self, policy: Callable[[np.ndarray], np.ndarray]) -> dict:
        n, e = len(self.tasks), self.e
        if self.envs is None:
            self.envs = [make_env(self.suite, t) for t in self.tasks for _ in range(e)]
        ev = evaluate_policy(
            lambda o: np.asarray(policy(o.reshape(n, e, -1))).reshape(n * e, -1),
            self.envs,
            self.episodes * n,
            self.seed,
        )
        out = {}
        for i, task in enumerate(self.tasks):
            sel = (ev["env"] // e) == i
            out[task] = {"return": float(ev["returns"][sel].mean()), "success": float(ev["success"][sel].mean() * 100)}
        return out

    def close(self) -> None:
        for env in self.envs or []:
            env.close()


def load_online_agent(cfg: Mapping, final_path: str | Path, device: torch.device) -> tuple[OnlineAgent, dict]:
    saved = ckpt.load(final_path, map_location="cpu")
    settings = replace(online_settings(cfg), sac=SACConfig(**saved["sac"]), pretrain_steps=0)
    agent = OnlineAgent(
        saved["method"],
        len(saved["tasks"]),
        saved["obs_dim"],
        saved["act_dim"],
        settings,
        device,
        int(saved["seed"]),
        None,
        pathway_backend(cfg),
    )
    agent.shared.load_state_dict(cpu_generators(saved["algo"]))
    if "pathways" in saved:
        agent.set_pathways(Pathways.from_state_dict(saved["pathways"]))
    return agent, saved


def evaluate_online_run(
    cfg: Mapping, suite: str, method: str, seed: int, final_path: str | Path, out_json: str | Path
) -> dict:
    """Stage ``online_evaluate``: ``evaluation.episodes`` per task with the deterministic policy;
    writes the same JSON as :func:`npf.stages.offline.evaluate_run` (``algo = "sac"``). Return
    suites are normalized with the datasets' reference scores when their manifests exist."""
    device = resolve_device(cfg["device"])
    torch.set_num_threads(int(cfg["torch_threads"]))
    agent, saved = load_online_agent(cfg, final_path, device)
    tasks = saved["tasks"]
    if tasks != online_tasks(cfg, suite) or saved["method"] != method:
        raise ValueError(
            f"{final_path}: a {saved['method']} run on tasks {tasks}, config asks {method} on "
            f"{online_tasks(cfg, suite)}"
        )
    refs = None
    if not is_success_suite(suite):
        paths = [Path(layout.dataset_manifest(cfg["results_dir"], suite, t)) for t in tasks]
        if all(p.exists() for p in paths):
            refs = [json.loads(p.read_text())["scores"] for p in paths]
    episodes = int(cfg["evaluation"]["episodes"])
    tracker = stage_tracker(
        cfg,
        "online_evaluate",
        suite,
        f"eval/{suite}/{method}-sac/seed{seed}",
        Path(out_json).with_suffix(layout.RUN_ID_SUFFIX),
        {"suite": suite, "method": method, "algo": "sac", "seed": seed},
        fresh=True,
    )
    status = "FAILED"
    try:
        ev = evaluate_tasks(
            numpy_policy(agent, device),
            suite,
            tasks,
            episodes,
            seed=int(cfg["evaluation"]["seed"]) + seed,
            ref_scores=refs,
            envs_per_task=min(episodes, int(cfg["evaluation"]["envs_per_task"])),
        )
        if ev["metric"] == "normalized" and refs is None:
            ev["metric"] = "return"  # no reference scores: raw returns (not comparable to normalized tables)
        ev.update(
            {
                "suite": suite,
                "method": method,
                "algo": "sac",
                "seed": seed,
                "episodes_per_task": episodes,
                "env_steps_per_task": saved["steps"],
                "updates": saved["updates"],
            }
        )
        publish_evaluation(tracker, ev, out_json)
        status = "FINISHED"
        return ev
    finally:
        tracker.close(status, error=sys.exc_info()[1])

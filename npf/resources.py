"""Memory requested per job (Snakemake's ``mem_mb`` resource: Slurm ``--mem``, local
``--resources mem_mb=N``): the config's ``mem_mb.<rule>`` when set, else an estimate.

A train_offline job holds its tasks' datasets (the arrays, then the replay buffer's float32
copies and the normalized ones: ~3x the files), the networks with their gradients, Adam
moments, target copies and one float mask per task, and one batch's activations (BCQ scores 10
candidate actions per next state). On top of that, a Python process with torch, MuJoCo and
MLflow imported takes ~1.5 GB. An online job (train_online, train_online_npf, dapd_ablation) holds
its replay buffers, N tasks x min(buffer_size, total_steps x envs_per_task) transitions, twice
(the buffers and the chunks written at a checkpoint). The other rules keep fixed requests.
"""

from __future__ import annotations

import itertools
import math

BASE_MB = 1500  # python + torch + mujoco + mlflow, measured ~1.1-1.3 GB resident
END_WIDTH = 128  # a bound on the networks' input / output sizes (observation + action, task id)
FIXED_MB = {
    "experts": 8000,
    "datasets": 4000,
    "pathways": 8000,
    "evaluate": 4000,
    "online_evaluate": 4000,
}
ONLINE_RULES = ("train_online", "train_online_npf", "dapd_ablation")
#: bytes of one stored transition: obs + next obs (a bound of 64 entries each: MT10 39, cheetah 17,
#: quadruped 46), action (≤ 16), reward, done, float32
TRANSITION_BYTES = (2 * 64 + 16 + 2) * 4


def _params(hidden: list[int]) -> int:
    widths = [END_WIDTH, *hidden, END_WIDTH]
    return sum(a * b + b for a, b in itertools.pairwise(widths))


def offline_mem_mb(cfg: dict, suite: str, algo: str, dataset_mb: float) -> int:
    """Estimated peak memory (MB) of one train_offline job, rounded up to 500 MB."""
    from npf.config import offline_section, suite_tasks

    off = offline_section(cfg, suite, algo)
    n_tasks = len(suite_tasks(cfg, suite))
    nets = off.get(algo, {})
    hidden = [v for k, v in nets.items() if k.endswith("_hidden")] or [[256, 256]]
    params = sum(_params(h) for h in hidden) * 2  # twin critics / target copies
    param_bytes = params * 4 * (6 + n_tasks)  # weights, grads, 2 Adam moments, targets; a mask per task
    widest = max(max(h) for h in hidden)
    depth = max(len(h) for h in hidden)
    act_bytes = off["batch_size"] * n_tasks * widest * depth * 4 * 10 * len(hidden)
    mb = BASE_MB + 3 * float(dataset_mb) + (param_bytes + act_bytes) / 2**20
    return int(math.ceil(mb / 500) * 500)


def online_mem_mb(cfg: dict, rule: str) -> int:
    """Estimated peak memory (MB) of the largest job of an online rule, rounded up to 500 MB."""
    from npf.config import suite_tasks
    from npf.online.settings import dapd_ablation_settings, online_settings

    if rule == "dapd_ablation":  # one task; the sizes do not depend on the variant
        settings, n_tasks = dapd_ablation_settings(cfg, "dense")[1], 1
    else:
        settings = online_settings(cfg)
        n_tasks = max([len(suite_tasks(cfg, s)) for s in cfg["online"]["suites"]] or [1])
    transitions = n_tasks * settings.replay_capacity
    params = _params(list(settings.sac.hidden)) * 3 * n_tasks  # actor, twin critics; per-task copies while pretraining
    mb = BASE_MB + (2 * transitions * TRANSITION_BYTES + params * 4 * 6) / 2**20
    return int(math.ceil(mb / 500) * 500)


def mem_mb(cfg: dict, rule: str, **job) -> int:
    """The ``mem_mb`` of one job of ``rule``: ``cfg["mem_mb"][rule]`` if given, else the estimate
    (train_offline: from ``job["suite"]``, ``job["algo"]`` and ``job["input_mb"]``) or the rule's
    fixed request."""
    given = cfg.get("mem_mb", {}).get(rule)
    if given:
        return int(given)
    if rule == "train_offline":
        return offline_mem_mb(cfg, job["suite"], job["algo"], job.get("input_mb", 0))
    if rule in ONLINE_RULES:
        return online_mem_mb(cfg, rule)
    return FIXED_MB[rule]

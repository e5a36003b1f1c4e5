"""Stages ``pathways``, ``train_offline`` and ``evaluate`` for the offline suites.

``pathways``  — SNIP masks per (suite, algo, seed) from each task's dataset at the network's
                initial weights, saved with those weights so training starts from the same θ0.
``train_offline`` — one synchronous multitask update per step over all tasks (NPF, MT or MHMT),
                periodic evaluation (normalized score / success), resumable checkpoints. On
                SIGTERM the current update finishes, a checkpoint is written and
                :class:`npf.preemption.Preempted` is raised (exit 75 via the stage wrapper);
                a NaN/inf loss stops the run naming the loss and the update, and the last
                good checkpoint is never overwritten.
``evaluate``  — final evaluation of a trained run with ``evaluation.episodes`` per task.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from npf import checkpoint as ckpt
from npf import layout
from npf.algos.base import Algorithm, check_finite
from npf.algos.bcq import BCQ, BCQConfig
from npf.algos.iql import IQL, IQLConfig
from npf.config import offline_section, pathway_backend, section, suite_tasks
from npf.data import (
    Dataset,
    DatasetError,
    Normalizer,
    ReplayBuffer,
    atomic_write_bytes,
    first_episodes,
    load_dataset,
    write_json,
)
from npf.envs import make_env
from npf.evaluate import evaluate_tasks, publish_evaluation
from npf.multitask import MultitaskLearner, factory_for, obs_dim_for
from npf.nets import resolve_device
from npf.pathways import Pathways
from npf.preemption import EvaluationCut, ResumableRun, one_line, save_checkpoint, stoppable
from npf.progress import Progress
from npf.tracking import stage_tracker

ALGOS = {"bcq": (BCQ, BCQConfig), "iql": (IQL, IQLConfig)}


@dataclass
class SuiteData:
    tasks: list[str]
    datasets: list[Dataset]
    normalizers: list[Normalizer]
    buffers: list[ReplayBuffer]

    @property
    def obs_dim(self) -> int:
        return self.datasets[0].obs_dim

    @property
    def act_dim(self) -> int:
        return self.datasets[0].act_dim

    def sample(self, batch_size: int, gen: torch.Generator) -> list[dict]:
        return [b.sample(batch_size, gen) for b in self.buffers]


def load_suite_data(
    cfg: dict, suite: str, device: torch.device, dataset_dir: str | Path | None = None, max_episodes: int | None = None
) -> SuiteData:
    """Each task's dataset, normalizer and replay buffer; ``max_episodes``: only the first that many
    whole episodes of each dataset (sample-complexity runs; normalizers are fit on them)."""
    tasks = suite_tasks(cfg, suite)
    root = Path(dataset_dir or layout.dataset_dir(cfg["results_dir"], suite))
    datasets = [load_dataset(root / f"{t}.npz") for t in tasks]
    if max_episodes is not None:
        datasets = [first_episodes(d, int(max_episodes)) for d in datasets]
    for t, d in zip(tasks, datasets):
        env = make_env(suite, t)
        want = (env.observation_space.shape[0], env.action_space.shape[0])
        env.close()
        if (d.obs_dim, d.act_dim) != want:
            raise DatasetError(
                f"{d.path}: observations/actions have sizes {(d.obs_dim, d.act_dim)}, task {suite}/{t} has {want}"
            )
    dims = {(d.obs_dim, d.act_dim) for d in datasets}
    if len(dims) != 1:
        raise ValueError(f"suite {suite}: tasks have different observation/action sizes {sorted(dims)}")
    normalize = section(cfg, "offline", suite)["normalize_states"]
    norms = [
        Normalizer.fit(d.arrays["observations"]) if normalize else Normalizer(np.zeros(d.obs_dim), np.ones(d.obs_dim))
        for d in datasets
    ]
    buffers = [ReplayBuffer.from_dataset(d, device, n) for d, n in zip(datasets, norms)]
    return SuiteData(tasks, datasets, norms, buffers)


def build_algo(
    cfg: dict,
    suite: str,
    algo: str,
    method: str,
    obs_dim: int,
    act_dim: int,
    num_tasks: int,
    seed: int,
    device: torch.device,
) -> Algorithm:
    cls, cfg_cls = ALGOS[algo]
    acfg = cfg_cls.from_dict(section(cfg, "offline", suite)[algo])
    return cls(
        obs_dim_for(method, obs_dim, num_tasks),
        act_dim,
        acfg,
        device,
        factory=factory_for(method, num_tasks),
        seed=seed,
    )


# --------------------------------------------------------------------------------------- pathways
def _subset_tag(max_episodes: int | None) -> str:
    """Run-name suffix and wildcard of a sample-complexity run (first ``max_episodes`` episodes)."""
    return "" if max_episodes is None else f"/n{int(max_episodes)}"


def _subset_wildcards(max_episodes: int | None) -> dict:
    return {} if max_episodes is None else {"dataset_size": int(max_episodes)}


def discover_pathways(
    cfg: dict, suite: str, algo: str, seed: int, out_path: str | Path, max_episodes: int | None = None
) -> dict:
    out_path = Path(out_path)
    device = resolve_device(cfg["device"])
    torch.set_num_threads(int(cfg["torch_threads"]))
    ckpt.seed_everything(seed)
    data = load_suite_data(cfg, suite, device, max_episodes=max_episodes)
    n = len(data.tasks)
    model = build_algo(cfg, suite, algo, "npf", data.obs_dim, data.act_dim, n, seed, device)
    pcfg = cfg["pathways"]
    gen = torch.Generator(device=device).manual_seed(seed)
    batches = data.sample(int(pcfg["score_batch_size"]), gen)
    tracker = stage_tracker(
        cfg,
        "pathways",
        suite,
        f"pathways/{suite}/{algo}{_subset_tag(max_episodes)}/seed{seed}",
        out_path.with_suffix(layout.RUN_ID_SUFFIX),
        {"suite": suite, "algo": algo, "seed": seed, **_subset_wildcards(max_episodes)},
        fresh=True,
    )  # not resumable: every attempt is a new run
    status = "FAILED"
    try:
        pw = Pathways.discover(model, batches, keep_ratio=float(pcfg["keep_ratio"]), mask_bias=bool(pcfg["mask_bias"]))
        init = {role: net.state_dict() for role, net in model.networks().items()}
        ckpt.save({"pathways": pw.state_dict(), "init": init, "tasks": data.tasks, "algo": algo}, out_path)
        summary = {"tasks": data.tasks, "keep_ratio": pcfg["keep_ratio"], "roles": {}}
        for role in model.roles:
            ov = pw.overlap_matrix(role)
            summary["roles"][role] = {
                "density": float(np.mean(pw.density(role))),
                "union_density": float(pw.union_density(role)),
                "overlap_percent": np.round(ov, 3).tolist(),
            }
            tracker.log_metrics(
                {
                    f"pathways/{role}/density": float(np.mean(pw.density(role))),
                    f"pathways/{role}/union_density": pw.union_density(role),
                },
                0,
            )
        write_json(out_path.with_suffix(".json"), summary)
        tracker.log_artifact(out_path.with_suffix(".json"))
        tracker.log_artifact(out_path)
        status = "FINISHED"
        return summary
    finally:
        tracker.close(status, error=sys.exc_info()[1])


# ---------------------------------------------------------------------------------- train / eval
def _policy_fn(learner: MultitaskLearner, norms: list[Normalizer], device: torch.device):
    mean = torch.as_tensor(np.stack([n.mean for n in norms]), device=device).unsqueeze(1)
    std = torch.as_tensor(np.stack([n.std for n in norms]), device=device).unsqueeze(1)

    def policy(obs: np.ndarray) -> np.ndarray:  # [N, E, obs_dim] → [N, E, act_dim]
        with torch.no_grad():
            o = (torch.as_tensor(obs, dtype=torch.float32, device=device) - mean) / std
            return learner.act(o).cpu().numpy()

    return policy


def _make_learner(cfg, suite, method, algo, seed, data: SuiteData, device, pathways_path):
    n = len(data.tasks)
    model = build_algo(cfg, suite, algo, method, data.obs_dim, data.act_dim, n, seed, device)
    pathways = None
    if method == "npf":
        if pathways_path is None:
            raise ValueError(f"method npf needs a pathways file (masks.pt) for suite {suite}, algo {algo}")
        saved = ckpt.load(pathways_path, map_location=device)
        missing = [k for k in ("tasks", "init", "pathways", "algo") if not isinstance(saved, dict) or k not in saved]
        if missing:
            raise ckpt.CheckpointError(f"{pathways_path}: not a pathways file (no {missing[0]!r})")
        if saved["algo"] != algo:
            raise ckpt.CheckpointError(f"{pathways_path}: masks were discovered for {saved['algo']}, not {algo}")
        if saved["tasks"] != data.tasks:
            raise ValueError(f"{pathways_path}: masks are for tasks {saved['tasks']}, config has {data.tasks}")
        for role, net in model.networks().items():
            if role not in saved["init"]:
                raise ckpt.CheckpointError(f"{pathways_path}: no initial weights for network {role!r}")
            ckpt.load_matching(net, saved["init"][role], pathways_path)
        for role, tgt in model.targets().items():
            tgt.load_state_dict(model.networks()[role].state_dict())
        try:
            pathways = Pathways.from_state_dict(saved["pathways"])
            pathways.check(model, saved["tasks"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ckpt.CheckpointError(f"{pathways_path}: unusable pathway masks ({one_line(e)})") from None
    return MultitaskLearner(model, method, n, pathways=pathways, reduce="sum", backend=pathway_backend(cfg))


def train_offline(
    cfg: dict,
    suite: str,
    method: str,
    algo: str,
    seed: int,
    out_dir: str | Path,
    pathways_path: str | Path | None = None,
    stop_after_updates: int | None = None,
    max_episodes: int | None = None,
) -> dict:
    """Train one run; ``max_episodes``: on the first that many episodes of each task's dataset only."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ocfg = offline_section(cfg, suite, algo)
    device = resolve_device(cfg["device"])
    torch.set_num_threads(int(cfg["torch_threads"]))
    ckpt.seed_everything(seed)
    data = load_suite_data(cfg, suite, device, max_episodes=max_episodes)
    learner = _make_learner(cfg, suite, method, algo, seed, data, device, pathways_path)
    learner.algo.set_compile(cfg.get("compile", "off"), cfg.get("fused_adam", False))
    gen = torch.Generator(device=device).manual_seed(seed + 17)
    step = 0
    ckpt_path, curve_path = out_dir / layout.CHECKPOINT_FILE, out_dir / layout.CURVE_FILE
    rows: list[dict] = []
    resuming = ckpt_path.exists()
    if resuming:
        state = ckpt.load(ckpt_path, map_location=device)
        try:
            learner.algo.load_state_dict(state["algo"])
            gen.set_state(state["gen"].cpu() if device.type == "cpu" else state["gen"])
            ckpt.set_rng_state(state["global_rng"])
            step = int(state["step"])
            # the learning curve up to the checkpoint (Snakemake deletes metrics.csv of a failed job)
            rows = [dict(r) for r in state["eval_rows"]] if "eval_rows" in state else _read_rows(curve_path, step)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ckpt.CheckpointError(
                f"{ckpt_path}: cannot resume from this checkpoint, it does not match the "
                f"configured {method}-{algo} networks ({one_line(e)})"
            ) from None
    run_name = f"train/{suite}/{method}-{algo}{_subset_tag(max_episodes)}/seed{seed}"
    tracker = stage_tracker(
        cfg,
        "train_offline",
        suite,
        run_name,
        out_dir / layout.RUN_ID_FILE,
        {"suite": suite, "method": method, "algo": algo, "seed": seed, **_subset_wildcards(max_episodes)},
        fresh=not resuming,
    )
    total, interval = int(ocfg["updates"]), int(ocfg["eval_interval"])
    refs = [d.manifest["scores"] for d in data.datasets]
    policy = _policy_fn(learner, data.normalizers, device)
    if rows:
        _write_csv(curve_path, rows)
    progress = Progress(total, f"{method}-{algo} {suite} s{seed}", initial=step, unit="update")
    t_update = 0.0
    resumable = ResumableRun(
        f"train_offline {suite} {method}-{algo} seed {seed}",
        ckpt_path,
        int(ocfg["checkpoint_every"]),
        total,
        stop_after=stop_after_updates,
        unit="update",
        position=None,
    )
    if resuming:
        resumable.resumed(step)

    def evaluate_now() -> None:
        """A row of the curve + MLflow. A SIGTERM cuts it short (the checkpoint comes first; the
        resume evaluates again)."""
        try:
            ev = evaluate_tasks(
                stoppable(policy, resumable.guard),
                suite,
                data.tasks,
                int(ocfg["eval_episodes"]),
                seed=1000 + seed,
                ref_scores=refs,
            )
        except EvaluationCut:
            return
        row = {
            "step": step,
            "score_mean": ev["normalized_mean"] if ev["metric"] == "normalized" else ev["success_mean"],
        }
        em = {
            "eval/score_mean": row["score_mean"],
            "eval/return_mean": ev["return_mean"],
            "rate/updates_per_s": (step - progress.start_n) / max(t_update, 1e-9),
        }
        for t, r in ev["tasks"].items():
            row[f"score/{t}"] = r["normalized_mean"] if ev["metric"] == "normalized" else r["success"]
            em[f"eval/score/{t}"] = row[f"score/{t}"]
            em[f"eval/return/{t}"] = r["return_mean"]
        tracker.log_metrics(em, step)
        progress.update(0, score=row["score_mean"])
        rows.append({k: int(v) if k == "step" else float(v) for k, v in row.items()})  # plain types:
        _write_csv(curve_path, rows)  # the checkpoint (weights_only) holds them

    def evaluation_due(at: int) -> bool:
        return at % interval == 0 or at == total

    with resumable.running(tracker, lambda: step):
        if step and evaluation_due(step) and not (rows and rows[-1]["step"] == step):
            evaluate_now()  # an evaluation a SIGTERM cut short
        while step < total:
            t0 = time.perf_counter()
            metrics = learner.update(data.sample(int(ocfg["batch_size"]), gen))
            t_update += time.perf_counter() - t0
            step += 1
            check_finite(metrics, step)
            if step % int(ocfg["log_every"]) == 0:
                tracker.log_metrics(metrics, step)
            progress.update(1)
            if evaluation_due(step):
                evaluate_now()
            if resumable.due(step):
                tracker.flush()  # before the checkpoint: metrics up to it are never lost (resume re-logs the rest)
                resumable.save(
                    {
                        "algo": learner.algo.state_dict(),
                        "gen": gen.get_state(),
                        "global_rng": ckpt.rng_state(),
                        "step": step,
                        "eval_rows": rows,
                    },
                    step,
                )
                if resumable.stop_here(step):
                    return {"stopped_at": step}
        progress.close()
        resumable.stop_before_final(step)
        final = {
            "algo": learner.algo.state_dict(),
            "method": method,
            "algo_name": algo,
            "suite": suite,
            "tasks": data.tasks,
            "seed": seed,
            "normalizers": [n.state_dict() for n in data.normalizers],
            **_subset_wildcards(max_episodes),
        }
        if learner.pathways is not None:
            final["pathways"] = learner.pathways.state_dict()
        save_checkpoint(final, out_dir / layout.FINAL_FILE, step)
        tracker.log_artifact(curve_path)
        resumable.status = "FINISHED"
        return {"updates": step, "updates_per_s": (step - progress.start_n) / max(t_update, 1e-9)}


def _read_rows(path: Path, upto: int) -> list[dict]:
    """Learning-curve rows at steps ≤ ``upto`` from an existing metrics.csv (older checkpoints)."""
    if not path.exists():
        return []
    with open(path) as f:
        return [r for r in csv.DictReader(f) if int(r["step"]) <= upto]


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(rows[-1])

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)

    atomic_write_bytes(path, write)


def evaluate_run(
    cfg: dict,
    suite: str,
    method: str,
    algo: str,
    seed: int,
    final_path: str | Path,
    out_json: str | Path,
    dataset_size: int | None = None,
) -> dict:
    """Final evaluation of a run; ``dataset_size``: a sample-complexity run's episodes per task
    (recorded in the JSON as ``dataset_size``)."""
    device = resolve_device(cfg["device"])
    torch.set_num_threads(int(cfg["torch_threads"]))
    saved = ckpt.load(final_path, map_location=device)
    missing = [k for k in ("tasks", "algo", "normalizers") if not isinstance(saved, dict) or k not in saved]
    if missing:
        raise ckpt.CheckpointError(f"{final_path}: not a trained run's final.pt (no {missing[0]!r})")
    tasks = saved["tasks"]
    cfg_tasks = suite_tasks(cfg, suite)
    if tasks != cfg_tasks:
        raise ValueError(f"{final_path}: trained on tasks {tasks}, config has {cfg_tasks}")
    manifests = []
    for t in tasks:
        mpath = Path(layout.dataset_manifest(cfg["results_dir"], suite, t))
        try:
            m = json.loads(mpath.read_text())
            m["counts"]["obs_dim"], m["counts"]["act_dim"], m["scores"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise DatasetError(f"{mpath}: not a valid dataset manifest ({one_line(e)})") from None
        manifests.append(m)
    obs_dim, act_dim = manifests[0]["counts"]["obs_dim"], manifests[0]["counts"]["act_dim"]
    model = build_algo(cfg, suite, algo, method, obs_dim, act_dim, len(tasks), seed, device)
    try:
        model.load_state_dict(saved["algo"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ckpt.CheckpointError(
            f"{final_path}: does not match the configured {method}-{algo} networks ({one_line(e)})"
        ) from None
    pathways = None
    if "pathways" in saved:
        try:
            pathways = Pathways.from_state_dict(saved["pathways"])
            pathways.check(model, tasks)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ckpt.CheckpointError(f"{final_path}: unusable pathway masks ({one_line(e)})") from None
    learner = MultitaskLearner(model, method, len(tasks), pathways=pathways, reduce="sum", backend=pathway_backend(cfg))
    norms = [Normalizer.from_state_dict(s) for s in saved["normalizers"]]
    episodes = int(cfg["evaluation"]["episodes"])
    tracker = stage_tracker(
        cfg,
        "evaluate",
        suite,
        f"eval/{suite}/{method}-{algo}{_subset_tag(dataset_size)}/seed{seed}",
        Path(out_json).with_suffix(layout.RUN_ID_SUFFIX),
        {"suite": suite, "method": method, "algo": algo, "seed": seed, **_subset_wildcards(dataset_size)},
        fresh=True,
    )
    status = "FAILED"
    try:
        ev = evaluate_tasks(
            _policy_fn(learner, norms, device),
            suite,
            tasks,
            episodes,
            seed=int(cfg["evaluation"]["seed"]) + seed,
            ref_scores=[m["scores"] for m in manifests],
            envs_per_task=min(episodes, int(cfg["evaluation"]["envs_per_task"])),
        )
        ev.update(
            {
                "suite": suite,
                "method": method,
                "algo": algo,
                "seed": seed,
                "episodes_per_task": episodes,
                **_subset_wildcards(dataset_size),
            }
        )
        publish_evaluation(tracker, ev, out_json)
        status = "FINISHED"
        return ev
    finally:
        tracker.close(status, error=sys.exc_info()[1])

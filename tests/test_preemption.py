"""Preemption and hard kills of real training jobs.

Each long stage (experts, train_offline) runs as a subprocess through the stage scripts' wrapper
(tests/bad_inputs/run_stage.py → workflow/scripts/_stage.py) and is interrupted at a random
point after its first checkpoint:

* SIGTERM (Slurm's preemption / time-limit signal): the job finishes the current step (experts and
  online: the current env step, mid-episode; offline: the current update), writes a checkpoint
  there, and exits 75 with one ``preempted:`` line;
* SIGKILL: the job dies at once, after it had already sent metrics past its last checkpoint.

Running the job again must end with weights bit-identical to an uninterrupted run (CPU, fixed
seed), in the same MLflow run (continued, ``npf.resumes`` = 1), whose metric history holds
exactly the uninterrupted run's (key, step) pairs: none missing, none duplicated.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from npf import checkpoint as ckpt
from npf.config import validate
from npf.preemption import EX_TEMPFAIL, Preempted, PreemptionGuard, first_non_finite, save_checkpoint
from npf.stages.expert import train_expert
from npf.stages.offline import discover_pathways, train_offline

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
PY = str(REPO / ".venv" / "bin" / "python")
RUNNER = str(REPO / "tests" / "bad_inputs" / "run_stage.py")
DATASETS = REPO / "tests" / "bad_inputs" / "datasets" / "good"
RNG = random.Random(os.environ.get("NPF_TEST_SEED") or time.time_ns())


# ------------------------------------------------------------------------------------ helpers
def store_uri(results: Path) -> str:
    return f"sqlite:///{results / 'mlflow.db'}"


@contextlib.contextmanager
def own_store(results: Path):
    """This process logs to ``results``' own sqlite store (the reference runs of a module)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", store_uri(results))
        yield


def spawn(spec: dict, results: Path, log: Path) -> subprocess.Popen:
    spec_path = log.with_suffix(".json")
    spec_path.write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if k != "NPF_DEBUG"}
    env.update(MLFLOW_TRACKING_URI=store_uri(results), NPF_MLFLOW_FLUSH_S="0")
    return subprocess.Popen(
        [PY, RUNNER, str(spec_path)], cwd=REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT
    )


def ckpt_step(path: Path) -> int | None:
    try:
        return int(ckpt.load(path)["step"])
    except ckpt.CheckpointError:
        return None


def max_metric_step(uri: str, run_id_file: Path, key: str) -> int:
    from mlflow.tracking import MlflowClient

    if not run_id_file.exists():
        return -1
    try:
        hist = MlflowClient(uri).get_metric_history(run_id_file.read_text().strip(), key)
    except Exception:  # the store is being created by the job
        return -1
    return max((m.step for m in hist), default=-1)


def kill_after_first_checkpoint(
    proc: subprocess.Popen, out_dir: Path, sig: int, uri: str, key: str, timeout: float = 300, busy_loops: int = 0
) -> dict:
    """Wait for the first checkpoint; for SIGKILL also until metrics past the latest checkpoint
    reached the store (they will be re-logged on resume); then wait a random moment and kill.
    ``busy_loops``: processes spinning on the CPU from the first checkpoint until the job ended."""
    t0 = time.monotonic()
    ck = out_dir / "checkpoint.pt"
    seen, step = None, None
    while time.monotonic() - t0 < timeout:
        assert proc.poll() is None, "the job ended before it could be interrupted"
        if ck.exists():
            mtime = ck.stat().st_mtime_ns
            if mtime != seen:  # read a checkpoint only when a new one was written
                seen, step = mtime, ckpt_step(ck)
            if step is not None and (
                sig == signal.SIGTERM or max_metric_step(uri, out_dir / "mlflow_run_id.txt", key) > step
            ):
                break
        time.sleep(0.1)
    else:
        pytest.fail("no checkpoint within the timeout")
    busy = [subprocess.Popen([PY, "-c", "while True: pass"]) for _ in range(busy_loops)]
    try:
        time.sleep(RNG.uniform(0.0, 0.8) + (2.0 if busy else 0.0))  # the load has set in
        sent, sent_wall = time.monotonic(), time.time()
        proc.send_signal(sig)
        rc = proc.wait(timeout=timeout)
    finally:
        for b in busy:
            b.kill()
            b.wait()
    # ckpt_s: from the signal to the last checkpoint's write (negative: none written after it)
    return {
        "rc": rc,
        "exit_s": time.monotonic() - sent,
        "ckpt_step": ckpt_step(ck),
        "ckpt_s": ck.stat().st_mtime - sent_wall,
    }


def run_to_end(spec: dict, results: Path, monkeypatch) -> None:
    """The re-run of the job (in this process: the same stage function, minus an interpreter start)."""
    from npf.online import stages as online
    from npf.stages import expert, offline

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri(results))
    monkeypatch.setenv("NPF_MLFLOW_FLUSH_S", "0")
    fn = {
        "train_expert": expert.train_expert,
        "train_offline": offline.train_offline,
        "npf.online.stages:train_online": online.train_online,
    }[spec["stage"]]
    fn(validate(spec["config"]), *spec["args"], **spec.get("kwargs", {}))


def runs_named(uri: str, name: str):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    runs = [r for e in c.search_experiments() for r in c.search_runs([e.experiment_id]) if r.info.run_name == name]
    return c, runs


def history(c, run) -> dict[str, list[tuple[int, float]]]:
    return {k: sorted((m.step, m.value) for m in c.get_metric_history(run.info.run_id, k)) for k in run.data.metrics}


def assert_same_run_continued(uri: str, ref_uri: str, name: str, run_id: str, nondeterministic=("rate/",)):
    c, runs = runs_named(uri, name)
    assert [r.info.run_id for r in runs] == [run_id], "not one continued run"
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags.get("npf.resumes") == "1"
    got = history(c, run)
    cr, ref_runs = runs_named(ref_uri, name)
    ref = history(cr, ref_runs[0])
    assert set(got) == set(ref)
    for k in ref:
        steps = [s for s, _ in got[k]]
        assert len(steps) == len(set(steps)), f"{k}: duplicated steps {steps}"
        assert steps == [s for s, _ in ref[k]], f"{k}: steps {steps} != uninterrupted {[s for s, _ in ref[k]]}"
        if not k.startswith(nondeterministic):
            assert got[k] == ref[k], f"{k}: values differ from the uninterrupted run"
    return run


def assert_state_equal(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_state_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_state_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


# ------------------------------------------------------------------------------------- experts
SUITE, TASK, SEED = "cheetah", "forward", 2
EXPERT_RUN = f"expert/{SUITE}/{TASK}/seed{SEED}"


def expert_config(results: Path) -> dict:
    return {
        "results_dir": str(results),
        "device": "cpu",
        # 3 episodes of 1000 steps; one update every 4th step (updates at steps ≡ 2 mod 4 from 502,
        # so losses are logged at 750, 1250, …)
        "experts": {
            "seeds": [SEED],
            "total_steps": 3000,
            "checkpoint_every": 1000,
            "learning_starts": 499,
            "updates_per_step": 0.25,
            "eval_episodes": 1,
            "log_every": 250,
            "sac": {"hidden": [32, 32], "batch_size": 32},
        },
        "datasets": {"expert_seed": SEED},
    }


def expert_dir(results: Path) -> Path:
    return results / "experts" / SUITE / TASK / f"seed{SEED}"


@pytest.fixture(scope="module")
def expert_reference(tmp_path_factory):
    results = tmp_path_factory.mktemp("expert-ref")
    with own_store(results):
        t0 = time.perf_counter()
        train_expert(validate(expert_config(results)), SUITE, TASK, SEED, expert_dir(results))
        yield {"results": results, "seconds": time.perf_counter() - t0}


# the quick suite interrupts the expert with SIGTERM and train_offline with SIGKILL; -m slow adds the others
@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, pytest.param(signal.SIGKILL, marks=pytest.mark.slow)], ids=["SIGTERM", "SIGKILL"]
)
def test_expert_interrupted_then_resumed_equals_uninterrupted(sig, expert_reference, tmp_path, monkeypatch):
    results = tmp_path / "results"
    out = expert_dir(results)
    spec = {"stage": "train_expert", "config": expert_config(results), "args": [SUITE, TASK, SEED, str(out)]}
    uri = store_uri(results)
    proc = spawn(spec, results, tmp_path / "first.log")
    # no busy loops here: their 2 s warm-up lets this small expert finish on an idle machine (the
    # loaded-CPU bound is the online test's, with a 1000-step episode)
    k = kill_after_first_checkpoint(proc, out, sig, uri, "loss/critic")
    first = (tmp_path / "first.log").read_text()
    run_id = (out / "mlflow_run_id.txt").read_text()
    assert not (out / "policy.pt").exists() and not (out / "metrics.json").exists()
    c, runs = runs_named(uri, EXPERT_RUN)
    assert [r.info.run_id for r in runs] == [run_id]
    if sig == signal.SIGTERM:
        assert k["rc"] == EX_TEMPFAIL, first
        lines = [ln for ln in first.splitlines() if ln.startswith(("preempted:", "error:"))]
        assert len(lines) == 1 and lines[0].startswith("preempted: SIGTERM received"), first
        # the checkpoint is after the current env step, mid-episode (1000-step episodes), not at
        # the episode's end: within 10 s of the signal, inside Slurm's 30 s before SIGKILL
        assert 1000 < k["ckpt_step"] <= 3000, k
        assert 0 < k["ckpt_s"] < 10 and k["exit_s"] < 10, k
        assert f"step {k['ckpt_step']}" in lines[0]
        assert runs[0].info.status == "KILLED"
        assert runs[0].data.tags["npf.preempted_at_step"] == str(k["ckpt_step"])
        state = ckpt.load(out / "checkpoint.pt")
        if k["ckpt_step"] % 1000:  # mid-episode: the episode's actions so far (one env, 6-dim)
            assert [a.shape for a in state["episode_actions"]] == [(k["ckpt_step"] % 1000, 6)]
        else:
            assert "episode_actions" not in state
    else:
        assert k["rc"] == -signal.SIGKILL
        assert runs[0].info.status == "RUNNING"
        # metrics past the checkpoint reached the store: the resume re-logs them (dropped as duplicates)
        assert max(m.step for m in c.get_metric_history(run_id, "loss/critic")) > k["ckpt_step"]
    print(f"{sig.name}: checkpoint at step {k['ckpt_step']}, exit {k['exit_s']:.2f} s after the signal")

    run_to_end(spec, results, monkeypatch)
    assert (out / "mlflow_run_id.txt").read_text() == run_id
    ref = expert_dir(expert_reference["results"])
    a, b = ckpt.load(out / "checkpoint.pt"), ckpt.load(ref / "checkpoint.pt")
    assert a["step"] == b["step"] == 3000
    assert_state_equal(a["algo"], b["algo"], "algo")
    assert_state_equal(a["buffer"], b["buffer"], "buffer")
    assert_state_equal(ckpt.load(out / "policy.pt")["actor"], ckpt.load(ref / "policy.pt")["actor"], "policy")
    mk, mu = json.loads((out / "metrics.json").read_text()), json.loads((ref / "metrics.json").read_text())
    assert mk["eval_return_mean"] == mu["eval_return_mean"] and mk["updates"] == mu["updates"]
    run = assert_same_run_continued(uri, store_uri(expert_reference["results"]), EXPERT_RUN, run_id)
    assert run.data.tags.get("npf.stage") == "experts"
    assert not list(out.glob("*.spool.jsonl"))


# ------------------------------------------------------------------------------------- offline
def offline_config(results: Path) -> dict:
    h = [32, 32]
    return {
        "results_dir": str(results),
        "device": "cpu",
        "tasks": {"cheetah": ["forward", "backward"]},
        "pathways": {"score_batch_size": 16},
        "offline": {
            "methods": ["npf"],
            "algos": ["iql"],
            "updates": 200,
            "batch_size": 32,
            "eval_interval": 100,
            "eval_episodes": 1,
            "checkpoint_every": 25,
            "log_every": 5,
            "iql": {"actor_hidden": h, "critic_hidden": h, "value_hidden": h},
        },
    }


def offline_dir(results: Path) -> Path:
    return results / "runs" / "cheetah" / "npf-iql" / "seed0"


def install_datasets(results: Path) -> None:
    d = results / "datasets" / "cheetah"
    d.mkdir(parents=True)
    for f in DATASETS.iterdir():
        (d / f.name).write_bytes(f.read_bytes())


@pytest.fixture(scope="module")
def offline_reference(tmp_path_factory):
    results = tmp_path_factory.mktemp("offline-ref")
    install_datasets(results)
    with own_store(results):
        cfg = validate(offline_config(results))
        masks = results / "pathways" / "masks.pt"
        discover_pathways(cfg, "cheetah", "iql", 0, masks)
        train_offline(cfg, "cheetah", "npf", "iql", 0, offline_dir(results), pathways_path=masks)
        yield {"results": results, "masks": masks}


@pytest.mark.parametrize(
    "sig", [pytest.param(signal.SIGTERM, marks=pytest.mark.slow), signal.SIGKILL], ids=["SIGTERM", "SIGKILL"]
)
def test_offline_interrupted_then_resumed_equals_uninterrupted(sig, offline_reference, tmp_path, monkeypatch):
    results = tmp_path / "results"
    install_datasets(results)
    out = offline_dir(results)
    spec = {
        "stage": "train_offline",
        "config": offline_config(results),
        "args": ["cheetah", "npf", "iql", 0, str(out)],
        "kwargs": {"pathways_path": str(offline_reference["masks"])},
    }
    uri = store_uri(results)
    proc = spawn(spec, results, tmp_path / "first.log")
    k = kill_after_first_checkpoint(proc, out, sig, uri, "loss/critic", busy_loops=2 if sig == signal.SIGTERM else 0)
    first = (tmp_path / "first.log").read_text()
    run_id = (out / "mlflow_run_id.txt").read_text()
    assert not (out / "final.pt").exists()
    if sig == signal.SIGTERM:
        assert k["rc"] == EX_TEMPFAIL, first
        assert sum(ln.startswith("preempted: SIGTERM received") for ln in first.splitlines()) == 1, first
        assert f"stopped at step {k['ckpt_step']}," in first
        # one update (+ the periodic evaluation if one was running), on a loaded CPU
        assert 0 < k["ckpt_s"] < 10 and k["exit_s"] < 10, k
    else:
        assert k["rc"] == -signal.SIGKILL
    print(f"{sig.name}: checkpoint at update {k['ckpt_step']}, exit {k['exit_s']:.2f} s after the signal")
    # Snakemake deletes the outputs of a failed job (metrics.csv too): the resume rebuilds the curve
    (out / "metrics.csv").unlink(missing_ok=True)

    run_to_end(spec, results, monkeypatch)
    ref = offline_dir(offline_reference["results"])
    assert_state_equal(ckpt.load(out / "final.pt"), ckpt.load(ref / "final.pt"), "final")
    rows = lambda p: list(csv.DictReader(open(p)))
    assert rows(out / "metrics.csv") == rows(ref / "metrics.csv")
    assert len(rows(out / "metrics.csv")) == 2
    assert_same_run_continued(uri, store_uri(offline_reference["results"]), "train/cheetah/npf-iql/seed0", run_id)


def test_offline_sigterm_during_an_evaluation_cuts_it_and_the_resume_evaluates_again(
    offline_reference, tmp_path, monkeypatch
):
    """SIGTERM while the periodic evaluation of update 100 runs: the evaluation stops at its next
    policy call (no row, no metric), the checkpoint of update 100 is written at once, and the
    resume evaluates update 100 again before training on: the curve, the weights and the MLflow
    history equal an uninterrupted run's."""
    import npf.stages.offline as offline

    results = tmp_path / "results"
    install_datasets(results)
    out = offline_dir(results)
    cfg = validate(offline_config(results))
    masks = offline_reference["masks"]
    real, calls = offline.evaluate_tasks, []

    def signalled_during_evaluation(policy, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # the first evaluation: the signal lands while it runs
            os.kill(os.getpid(), signal.SIGTERM)
        return real(policy, *args, **kwargs)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri(results))
    monkeypatch.setenv("NPF_MLFLOW_FLUSH_S", "0")
    monkeypatch.setattr(offline, "evaluate_tasks", signalled_during_evaluation)
    with pytest.raises(Preempted, match="stopped at step 100,"):
        train_offline(cfg, "cheetah", "npf", "iql", 0, out, pathways_path=masks)
    assert int(ckpt.load(out / "checkpoint.pt")["step"]) == 100
    assert ckpt.load(out / "checkpoint.pt")["eval_rows"] == []  # the cut evaluation left no row
    run_id = (out / "mlflow_run_id.txt").read_text()

    monkeypatch.setattr(offline, "evaluate_tasks", real)
    train_offline(cfg, "cheetah", "npf", "iql", 0, out, pathways_path=masks)
    ref = offline_dir(offline_reference["results"])
    assert_state_equal(ckpt.load(out / "final.pt"), ckpt.load(ref / "final.pt"), "final")
    assert (out / "metrics.csv").read_text() == (ref / "metrics.csv").read_text()
    assert_same_run_continued(
        store_uri(results), store_uri(offline_reference["results"]), "train/cheetah/npf-iql/seed0", run_id
    )


# -------------------------------------------------------------------------------------- online
ONLINE_RUN = "online/mt10/sac-npf/seed0"


def online_config(results: Path) -> dict:
    # 150-step MT10 episodes; checkpoints every episode; pretraining copies until step 300, then merged
    return {
        "results_dir": str(results),
        "device": "cpu",
        "tasks": {"mt10": ["reach", "drawer-close"]},
        "online": {
            "total_steps": 900,
            "learning_starts": 150,
            "pretrain_steps": 300,
            "batch_size": 16,
            "eval_interval": 300,
            "eval_episodes": 1,
            "checkpoint_every": 150,
            "log_every": 10,
            "dapd": {"M": 2, "interval": 1},
            "sac": {"hidden": [16, 16]},
        },
    }


def online_dir(results: Path) -> Path:
    return results / "online" / "runs" / "mt10" / "sac-npf" / "seed0"


@pytest.fixture(scope="module")
def online_reference(tmp_path_factory):
    from npf.online.stages import train_online

    results = tmp_path_factory.mktemp("online-ref")
    with own_store(results):
        train_online(validate(online_config(results)), "mt10", "sac-npf", 0, online_dir(results))
        yield {"results": results}


def test_online_sigterm_checkpoints_at_the_next_step_then_resumes_identically(online_reference, tmp_path, monkeypatch):
    results = tmp_path / "results"
    out = online_dir(results)
    spec = {
        "stage": "npf.online.stages:train_online",
        "config": online_config(results),
        "args": ["mt10", "sac-npf", 0, str(out)],
    }
    uri = store_uri(results)
    proc = spawn(spec, results, tmp_path / "first.log")
    k = kill_after_first_checkpoint(proc, out, signal.SIGTERM, uri, "loss/critic")
    first = (tmp_path / "first.log").read_text()
    assert k["rc"] == EX_TEMPFAIL, first
    lines = [ln for ln in first.splitlines() if ln.startswith(("preempted:", "error:"))]
    assert len(lines) == 1 and lines[0].startswith("preempted: SIGTERM received"), first
    assert 150 < k["ckpt_step"] < 900, k  # after the current env step (mid-episode or not), not the end
    assert f"stopped at step {k['ckpt_step']}," in lines[0]
    assert not (out / "final.pt").exists()
    run_id = (out / "mlflow_run_id.txt").read_text()
    _c, runs = runs_named(uri, ONLINE_RUN)
    assert [r.info.run_id for r in runs] == [run_id] and runs[0].info.status == "KILLED"
    assert runs[0].data.tags["npf.preempted_at_step"] == str(k["ckpt_step"])
    print(
        f"SIGTERM: checkpoint at env step {k['ckpt_step']} {k['ckpt_s']:.2f} s after the signal, exit after "
        f"{k['exit_s']:.2f} s"
    )

    run_to_end(spec, results, monkeypatch)
    ref = online_dir(online_reference["results"])
    assert_state_equal(ckpt.load(out / "final.pt"), ckpt.load(ref / "final.pt"), "final")
    assert (out / "metrics.csv").read_text() == (ref / "metrics.csv").read_text()
    assert_same_run_continued(uri, store_uri(online_reference["results"]), ONLINE_RUN, run_id)


def cheetah_online_config(results: Path) -> dict:
    # one 1000-step episode of random actions, then training; a checkpoint at that boundary only
    return {
        "results_dir": str(results),
        "device": "cpu",
        "tasks": {"cheetah": ["forward"]},
        "online": {
            "suites": ["cheetah"],
            "total_steps": 2000,
            "learning_starts": 1000,
            "pretrain_steps": 0,
            "batch_size": 16,
            "eval_interval": 500,
            "eval_episodes": 1,
            "checkpoint_every": 1000,
            "log_every": 50,
            "dapd": {"M": 2, "interval": 1},
            "sac": {"hidden": [16, 16]},
        },
    }


CHEETAH_RUN = "online/cheetah/sac-npf/seed0"


@pytest.fixture(scope="module")
def cheetah_online_reference(tmp_path_factory):
    from npf.online.stages import train_online

    results = tmp_path_factory.mktemp("online-cheetah-ref")
    with own_store(results):
        train_online(
            validate(cheetah_online_config(results)),
            "cheetah",
            "sac-npf",
            0,
            results / "online" / "runs" / "cheetah" / "sac-npf" / "seed0",
        )
        yield {"results": results}


def test_online_sigterm_mid_episode_on_a_loaded_cpu_checkpoints_within_10_s_then_resumes_identically(
    cheetah_online_reference, tmp_path, monkeypatch
):
    """SIGTERM during a 1000-step episode while two busy loops load the CPU: the job checkpoints
    after the current env step (not at the episode's end), and exits 75 within 10 s of the signal,
    and the resume (which replays the episode's recorded actions) ends identical to an
    uninterrupted run."""
    results = tmp_path / "results"
    out = results / "online" / "runs" / "cheetah" / "sac-npf" / "seed0"
    spec = {
        "stage": "npf.online.stages:train_online",
        "config": cheetah_online_config(results),
        "args": ["cheetah", "sac-npf", 0, str(out)],
    }
    uri = store_uri(results)
    proc = spawn(spec, results, tmp_path / "first.log")
    k = kill_after_first_checkpoint(proc, out, signal.SIGTERM, uri, "loss/critic", timeout=600, busy_loops=2)
    first = (tmp_path / "first.log").read_text()
    assert k["rc"] == EX_TEMPFAIL, first
    assert 1000 < k["ckpt_step"] < 2000, k  # mid-episode: the episode ends at 2000
    assert f"stopped at step {k['ckpt_step']}," in first
    assert 0 < k["ckpt_s"] < 10, k  # the checkpoint, written after the signal
    assert k["exit_s"] < 10, k  # and the process gone: well inside Slurm's 30 s before SIGKILL
    state = ckpt.load(out / "checkpoint.pt")
    assert [a.shape for a in state["episode_actions"]] == [(k["ckpt_step"] - 1000, 6)]  # one env's episode so far
    print(
        f"SIGTERM on a loaded CPU: checkpoint at env step {k['ckpt_step']} {k['ckpt_s']:.2f} s after the signal, "
        f"exit after {k['exit_s']:.2f} s"
    )

    run_to_end(spec, results, monkeypatch)
    ref = cheetah_online_reference["results"] / "online" / "runs" / "cheetah" / "sac-npf" / "seed0"
    assert_state_equal(ckpt.load(out / "final.pt"), ckpt.load(ref / "final.pt"), "final")
    assert (out / "metrics.csv").read_text() == (ref / "metrics.csv").read_text()
    assert_same_run_continued(
        uri, store_uri(cheetah_online_reference["results"]), CHEETAH_RUN, (out / "mlflow_run_id.txt").read_text()
    )


# ----------------------------------------------------------------------------------- unit level
def test_guard_sets_requested_and_restores_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with PreemptionGuard() as g:
        assert not g.requested
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # a repeated signal is ignored, not fatal
        assert g.requested and g.signame == "SIGTERM"
        e = g.preempted(1234, "/x/checkpoint.pt")
    assert signal.getsignal(signal.SIGTERM) is before
    assert isinstance(e, Preempted) and e.exit_code == EX_TEMPFAIL == 75 and "step 1234" in str(e)


def test_save_checkpoint_never_overwrites_with_non_finite(tmp_path):
    p = tmp_path / "checkpoint.pt"
    good = {"algo": {"actor": {"w": torch.ones(3)}}, "step": 10}
    save_checkpoint(good, p, 10)
    bad = {"algo": {"actor": {"w": torch.tensor([1.0, float("nan"), 2.0])}}, "step": 20}
    with pytest.raises(FloatingPointError, match=r"algo\.actor\.w at step 20.*kept"):
        save_checkpoint(bad, p, 20)
    assert ckpt.load(p)["step"] == 10
    assert first_non_finite({"a": [torch.zeros(2), {"b": float("inf")}]}) == "a.1.b"
    assert first_non_finite({"rng": torch.tensor([1, 2]), "x": 1.5}) is None


# ------------------------------------------------------------------------------ through snakemake
@pytest.mark.slow
def test_sigterm_to_snakemake_process_group_then_rerun(tmp_path):
    """What Slurm does on preemption / time limit: SIGTERM to every process of the job (here:
    Snakemake and the stage script it runs). Snakemake waits for the job, the job checkpoints after
    its current env step (mid-episode) and exits 75; the same command run again resumes and finishes."""
    results = tmp_path / "results"
    cfg = expert_config(results)
    cfg["experts"]["seeds"], cfg["datasets"]["expert_seed"] = [0], 0
    cfg["online"] = {"methods": [], "dapd_ablation": {"variants": []}}
    (tmp_path / "c.yaml").write_text(json.dumps(cfg))
    bin_dir = tmp_path / "bin"  # no slurmctld here: make the Slurm plugin's `scontrol` probe fail at once
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "scontrol").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "NPF_DEBUG"}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", MLFLOW_TRACKING_URI=store_uri(results))
    out = results / "experts" / SUITE / TASK / "seed0"
    cmd = [
        str(REPO / ".venv" / "bin" / "snakemake"),
        "--cores",
        "1",
        "--nolock",
        "--configfile",
        str(tmp_path / "c.yaml"),
        "--allowed-rules",
        "experts",
        "--",
        str(out / "policy.pt"),
    ]
    p = subprocess.Popen(
        cmd, cwd=REPO, env=env, start_new_session=True, stdout=open(tmp_path / "sm1.log", "w"), stderr=subprocess.STDOUT
    )
    while not (out / "checkpoint.pt").exists():
        assert p.poll() is None, (tmp_path / "sm1.log").read_text()
        time.sleep(0.1)
    time.sleep(RNG.uniform(0.0, 0.8))
    os.killpg(p.pid, signal.SIGTERM)  # the whole job, as Slurm signals it
    assert p.wait(timeout=300) != 0
    log = (results / "logs" / "experts" / SUITE / TASK / "seed0.log").read_text()
    step = ckpt_step(out / "checkpoint.pt")
    assert 1000 <= step < 3000 and f"preempted: SIGTERM received: stopped at step {step}," in log, log
    assert "returned non-zero exit status 75" in (tmp_path / "sm1.log").read_text()
    assert not (out / "policy.pt").exists()
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    c, runs = runs_named(store_uri(results), f"expert/{SUITE}/{TASK}/seed0")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and runs[0].data.tags["npf.resumes"] == "1"
    steps = [m.step for m in c.get_metric_history(runs[0].info.run_id, "train/episode_return")]
    assert sorted(steps) == [1000, 2000, 3000]


def test_a_preempted_run_gives_the_tracker_what_is_left_of_its_share_of_the_exit_time(tmp_path):
    """The tracker's close gets until ``TRACKER_UNTIL_S`` after the signal (at least 1 s): a signal
    5 s ago leaves it 1 s; one just now, about 6 s; the checkpoint and the KILLED status come first."""
    from npf.preemption import TRACKER_UNTIL_S, ResumableRun

    class Tracker:
        def close(self, status, step, error=None, within_s=None):
            self.closed = (status, step, within_s)

    for signal_age_s in (5.0, 0.0):
        run, tracker = ResumableRun("job", tmp_path / "checkpoint.pt", 10, 100), Tracker()
        t0 = time.monotonic()
        with pytest.raises(Preempted), run.running(tracker, lambda: 10):
            os.kill(os.getpid(), signal.SIGTERM)
            run.guard.received_at -= signal_age_s
            run.save({"w": torch.ones(2)}, 10)
            run.stop_here(10)
        since_signal_s = time.monotonic() - t0 + signal_age_s  # an upper bound
        status, step, within_s = tracker.closed
        assert (status, step) == ("PREEMPTED", 10) and ckpt.load(tmp_path / "checkpoint.pt")["w"].sum() == 2
        assert max(1.0, TRACKER_UNTIL_S - since_signal_s) <= within_s <= max(1.0, TRACKER_UNTIL_S - signal_age_s)

"""Tracking outages: a real ``mlflow server`` (sqlite backend, 127.0.0.1, free port) is stopped
and restarted while a job logs to it; other outages use a port nobody listens on, then sync into
a local store. Training never waits on the store, nothing logged is lost
(the store's metric history is compared with what the job logged), nothing is duplicated, and
the spool next to the run-id file syncs at the next flush, at the end, on a resume, or with
``python -m npf.tracking sync``. Eight concurrent writers to one server lose nothing either.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PY = str(REPO / ".venv" / "bin" / "python")
MLFLOW = str(REPO / ".venv" / "bin" / "mlflow")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``mlflow server`` on 127.0.0.1 that can be stopped and started again on the same port/store."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> float:
        t0 = time.monotonic()
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        self.proc = subprocess.Popen(
            [
                MLFLOW,
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.root / 'store.db'}",
                "--artifacts-destination",
                str(self.root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            cwd=self.root,
            env=env,
            start_new_session=True,
            stdout=open(self.root / "server.log", "a"),
            stderr=subprocess.STDOUT,
        )
        while time.monotonic() - t0 < timeout:
            assert self.proc.poll() is None, (self.root / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("mlflow server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: the server and its uvicorn worker
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        self.proc = None


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def local_store(tmp_path_factory) -> str:
    """A sqlite store shared by the tests that only need *some* store to sync into: a spool is not
    tied to a server, it goes wherever the job (or `npf.tracking sync`) points."""
    return f"sqlite:///{tmp_path_factory.mktemp('local-store') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def running_server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("server"))
    s.start()
    yield s
    s.stop()


# A job that logs like a training loop: params at start, metrics every step (values known in
# advance), a tag midway, an artifact at the end. Writes its progress and the longest time any
# tracking call blocked it. Runs steps [first, last) or, with last < 0, until STOP exists.
CHILD = r"""
import json, math, os, sys, time
from pathlib import Path
from npf.tracking import Tracker
uri, rid, prog = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[6])
first, last, pause = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
worst, slow = 0.0, []
def timed(f, *a, **k):
    global worst
    t = time.monotonic(); f(*a, **k); d = time.monotonic() - t; worst = max(worst, d)
    if d > 0.5:
        slow.append([f.__name__, round(t, 2), round(d, 2)])
t = time.monotonic()
tr = Tracker("npf-outage", rid.parent.name, rid, {"lr": 0.001, "net": {"hidden": [32, 32]}}, {"npf.stage": "test"}, uri,
             flush_every_s=0.1)
worst = time.monotonic() - t
step = first
while (step < last) if last >= 0 else not (prog.parent / "STOP").exists() or step < first + 50:
    timed(tr.log_metrics, {"a": step * 0.5, "b": math.sin(step)}, step)
    if step == first + 20:
        timed(tr.set_tags, {"midway": str(step)})
    prog.write_text(json.dumps({"step": step, "worst_s": worst, "slow": slow}))
    step += 1
    time.sleep(pause)
art = rid.parent / "summary.json"
art.write_text(json.dumps({"last": step - 1}))
timed(tr.log_artifact, art)
timed(tr.finish)
prog.write_text(json.dumps({"step": step - 1, "worst_s": worst, "slow": slow, "done": True, "logged": [first, step]}))
"""


def child(uri: str, job: Path, first: int, last: int, pause: float = 0.01) -> subprocess.Popen:
    job.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.Popen(
        [
            PY,
            "-c",
            CHILD,
            uri,
            str(job / "mlflow_run_id.txt"),
            str(first),
            str(last),
            str(pause),
            str(job / "progress.json"),
        ],
        cwd=REPO,
        env=env,
        stdout=open(job / "out.log", "w"),
        stderr=subprocess.STDOUT,
    )


def progress(job: Path) -> dict:
    try:
        return json.loads((job / "progress.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"step": -1}


def wait_for(cond, timeout=120, what=""):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def stored_steps(uri: str, job: Path, key: str = "a") -> list[int]:
    rid = job / "mlflow_run_id.txt"
    if not rid.exists():
        return []
    try:
        return sorted(m.step for m in client(uri).get_metric_history(rid.read_text().strip(), key))
    except Exception:
        return []


def assert_complete(uri: str, job: Path, first: int, last: int, resumes: str | None = None) -> None:
    """The run holds exactly steps [first, last) of every metric, with the logged values."""
    c = client(uri)
    rid = (job / "mlflow_run_id.txt").read_text().strip()
    runs = [r for e in c.search_experiments() for r in c.search_runs([e.experiment_id]) if r.info.run_name == job.name]
    assert [r.info.run_id for r in runs] == [rid], "expected exactly one run"
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.001" and run.data.params["net.hidden"] == "[32, 32]"
    assert run.data.tags["npf.stage"] == "test" and "midway" in run.data.tags
    assert run.data.tags.get("npf.resumes") == resumes
    for key, f in (("a", lambda s: s * 0.5), ("b", math.sin)):
        hist = sorted((m.step, m.value) for m in c.get_metric_history(rid, key))
        assert [s for s, _ in hist] == list(range(first, last)), f"{key}: missing or duplicated steps"
        assert all(v == f(s) for s, v in hist), key
    assert "summary.json" in [a.path for a in c.list_artifacts(rid)]
    assert not (job / "mlflow_run_id.spool.jsonl").exists(), "records left in the spool"


def test_store_down_at_start_and_restarted_mid_run(server, tmp_path):
    job = tmp_path / "job-outage"
    p = child(server.uri, job, 0, -1)
    # 1. no store at all: the job runs anyway, spooling (the run cannot even be created yet)
    wait_for(lambda: progress(job)["step"] >= 50, what="the job to log with the store down")
    assert not (job / "mlflow_run_id.txt").exists() and (job / "mlflow_run_id.spool.jsonl").exists()
    # 2. the store comes up: the run is created and the backlog sent at the next flush
    started = server.start()
    # every step logged before the store came up is stored (not: the store keeps pace with the job,
    # which depends on how fast this machine's server ingests)
    backlog = progress(job)["step"]
    wait_for(lambda: len(stored_steps(server.uri, job)) > backlog > 50, what="the backlog")
    # 3. the store goes down mid-run: training continues
    server.stop()
    at_stop = progress(job)["step"]
    wait_for(lambda: progress(job)["step"] > at_stop + 100, what="progress during the outage")
    # 4. it comes back: the spool is sent while the job is still running
    server.start()
    at_restart = progress(job)["step"]
    wait_for(lambda: (stored_steps(server.uri, job) or [-1])[-1] >= at_restart, what="the sync after the restart")
    assert p.poll() is None, "the job ended before the store came back"
    (job / "STOP").touch()
    assert p.wait(timeout=120) == 0, (job / "out.log").read_text()
    prog = progress(job)
    assert prog.get("done")
    first, last = prog["logged"]
    assert_complete(server.uri, job, first, last)
    out = (job / "out.log").read_text()
    assert "unreachable" in out and "reachable again" in out, out
    # the dead store never blocked the loop (connection refused fails at once; no client retries)
    assert prog["worst_s"] < 5, prog
    print(f"logged {last} steps; server start {started:.1f} s; longest tracking call {prog['worst_s']:.3f} s")


def dead_uri() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


@pytest.mark.slow
def test_leftover_spool_synced_by_cli_and_by_resume(local_store, tmp_path):
    job, dead, live = tmp_path / "job-resume", dead_uri(), local_store
    # a whole job with the store down: it finishes, its records stay in the spool
    assert child(dead, job, 0, 100, 0).wait(timeout=120) == 0
    spool = job / "mlflow_run_id.spool.jsonl"
    assert "still unreachable" in (job / "out.log").read_text()
    n = len(spool.read_text().splitlines())
    with open(spool, "a") as f:
        f.write('{"op":"metrics","m":[["a",0.5,1,1')  # a record torn by a kill during the write
    t0 = time.monotonic()
    cli = subprocess.run(
        [PY, "-m", "npf.tracking", "sync", str(tmp_path), "--uri", dead],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 1 and "still pending" in cli.stdout, cli.stdout + cli.stderr
    assert time.monotonic() - t0 < 30
    assert "dropped an incomplete record" in cli.stderr
    assert len(spool.read_text().splitlines()) == n  # everything kept but the torn line
    # a store is back
    cli = subprocess.run(
        [PY, "-m", "npf.tracking", "sync", str(tmp_path), "--uri", live],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0 and "sent" in cli.stdout, cli.stdout + cli.stderr
    assert_complete(live, job, 0, 100)
    # a resume from a checkpoint at step 50 re-logs 50..99 (same values) and goes on to 200
    assert child(live, job, 50, 200, 0).wait(timeout=120) == 0
    assert_complete(live, job, 0, 200, resumes="1")

    # leftovers of a job that died with the store down are sent by its resume itself
    job2 = tmp_path / "job-resume-2"
    assert child(dead, job2, 0, 60, 0).wait(timeout=120) == 0
    assert child(live, job2, 30, 90, 0).wait(timeout=120) == 0
    assert_complete(live, job2, 0, 90, resumes="1")


@pytest.mark.slow
def test_eight_concurrent_writers_lose_nothing(running_server, tmp_path):
    jobs = [tmp_path / f"job-concurrent-{i}" for i in range(8)]
    t0 = time.monotonic()
    procs = [child(running_server.uri, j, 0, 200, 0.001) for j in jobs]
    for j, p in zip(jobs, procs):
        assert p.wait(timeout=300) == 0, (j / "out.log").read_text()
    for j in jobs:
        assert_complete(running_server.uri, j, 0, 200)
    print(f"8 writers x 200 steps x 2 metrics in {time.monotonic() - t0:.1f} s")


def test_http_retries_are_short(tmp_path):
    """The client gives up on a dead server at once (no 7 retries with exponential backoff)."""
    code = (
        "import os, time\nfrom npf.tracking import Tracker\nt = time.monotonic()\n"
        f"tr = Tracker('e', 'r', {str(tmp_path / 'rid.txt')!r}, {{}}, {{}}, 'http://127.0.0.1:{free_port()}')\n"
        "tr.log_metrics({'x': 1.0}, 0)\ntr.finish()\n"
        "print(os.environ['MLFLOW_HTTP_REQUEST_MAX_RETRIES'], os.environ['MLFLOW_HTTP_REQUEST_TIMEOUT'],"
        " round(time.monotonic() - t, 2))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    r = subprocess.run([PY, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    retries, timeout, seconds = r.stdout.split()[-3:]
    assert (retries, timeout) == ("0", "10") and float(seconds) < 5, r.stdout
    assert (tmp_path / "rid.spool.jsonl").exists()


def test_training_job_survives_a_dead_store(local_store, tmp_path, monkeypatch):
    """A real train_offline run against a store that is down the whole time: it finishes, and
    every metric it logged reaches the store later through `python -m npf.tracking sync`."""
    import shutil

    import torch

    from npf.config import validate
    from npf.stages.offline import train_offline

    torch.set_num_threads(1)
    results = tmp_path / "results"
    (results / "datasets" / "cheetah").mkdir(parents=True)
    for f in (REPO / "tests" / "bad_inputs" / "datasets" / "good").iterdir():
        shutil.copy(f, results / "datasets" / "cheetah" / f.name)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead_uri())
    h = [32, 32]
    cfg = validate(
        {
            "results_dir": str(results),
            "device": "cpu",
            "tasks": {"cheetah": ["forward", "backward"]},
            "offline": {
                "updates": 40,
                "batch_size": 16,
                "eval_interval": 40,
                "eval_episodes": 1,
                "checkpoint_every": 10,
                "log_every": 5,
                "iql": {"actor_hidden": h, "critic_hidden": h, "value_hidden": h},
            },
        }
    )
    out = results / "runs" / "cheetah" / "mt-iql" / "seed0"
    t0 = time.monotonic()
    train_offline(cfg, "cheetah", "mt", "iql", 0, out)
    wall = time.monotonic() - t0
    assert (out / "final.pt").exists() and (out / "metrics.csv").exists()
    spooled = {}
    for line in (out / "mlflow_run_id.spool.jsonl").read_text().splitlines():
        rec = json.loads(line)
        for key, value, _, step in rec.get("m", []):
            spooled.setdefault(key, []).append((step, value))
    assert len(spooled["loss/critic"]) == 8
    r = subprocess.run(
        [PY, "-m", "npf.tracking", "sync", str(results), "--uri", local_store],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    c = client(local_store)
    rid = (out / "mlflow_run_id.txt").read_text().strip()
    run = c.get_run(rid)
    assert run.info.status == "FINISHED" and run.data.params["offline.updates"] == "40"
    for key, logged in spooled.items():
        assert sorted((m.step, m.value) for m in c.get_metric_history(rid, key)) == sorted(logged), key
    assert "metrics.csv" in [a.path for a in c.list_artifacts(rid)]
    print(f"train_offline with the store down: {wall:.1f} s")


def test_fresh_start_replaces_the_run_and_resume_drops_relogged_steps(local_store, tmp_path):
    """Local sqlite store. A job killed before its first checkpoint starts over in a NEW run (the old
    one: KILLED, tag npf.restarted_as); a resume re-logging a step keeps the stored value once."""
    from npf.tracking import Tracker

    uri, rid = local_store, tmp_path / "job-fresh" / "mlflow_run_id.txt"
    t1 = Tracker("npf-test", "job-fresh", rid, {"x": 1}, {}, uri)
    t1.log_metrics({"a": 1.0}, 5)
    t1.flush()  # ... and the process is killed before any checkpoint
    t2 = Tracker("npf-test", "job-fresh", rid, {"x": 1}, {}, uri, fresh=True)
    t2.log_metrics({"a": 2.0}, 5)
    t2.flush()  # a checkpoint at step 5 now exists
    t3 = Tracker("npf-test", "job-fresh", rid, {"x": 1}, {}, uri)  # resume from it
    t3.log_metrics({"a": 99.0}, 5)  # re-logged after the checkpoint: dropped
    t3.log_metrics({"a": 3.0}, 6)
    t3.finish()
    c = client(uri)
    old, new = c.get_run(t1.run_id), c.get_run(t3.run_id)
    assert t2.run_id == t3.run_id != t1.run_id == old.info.run_id
    assert old.info.status == "KILLED" and old.data.tags["npf.restarted_as"] == new.info.run_id
    assert new.info.status == "FINISHED" and new.data.tags["npf.resumes"] == "1"
    assert [(m.step, m.value) for m in c.get_metric_history(new.info.run_id, "a")] == [(5, 2.0), (6, 3.0)]
    assert rid.read_text() == new.info.run_id and not list(rid.parent.glob("*.spool.jsonl"))


def test_resume_sends_the_leftovers_first(local_store, tmp_path):
    """In one process: a job ends with the store down (spool left, no run yet); its resume, with
    the store back, creates the run from the spool, sends the backlog, drops re-logged steps."""
    from npf.tracking import Tracker

    rid = tmp_path / "job-leftover" / "mlflow_run_id.txt"
    t1 = Tracker("npf-test", "job-leftover", rid, {"x": 1}, {"npf.stage": "test"}, dead_uri())
    for s in range(10):
        t1.log_metrics({"a": s * 0.5}, s)
    t1.set_tags({"midway": "1"})
    t1.finish()
    assert t1.run_id is None and not rid.exists() and spool_of(rid).exists()
    t2 = Tracker("npf-test", "job-leftover", rid, {"x": 1}, {"npf.stage": "test"}, local_store)
    assert t2.run_id is not None and rid.read_text() == t2.run_id and not spool_of(rid).exists()
    for s in range(5, 15):  # resumed from a checkpoint at step 5
        t2.log_metrics({"a": s * 0.5}, s)
    t2.finish()
    c = client(local_store)
    run = c.get_run(t2.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["npf.resumes"] == "1" and run.data.tags["midway"] == "1"
    assert [(m.step, m.value) for m in c.get_metric_history(t2.run_id, "a")] == [(s, s * 0.5) for s in range(15)]


def spool_of(rid: Path) -> Path:
    return rid.with_name(rid.stem + ".spool.jsonl")


def test_preempted_close_is_bounded_and_its_leftovers_reach_the_store_on_resume(local_store, tmp_path, monkeypatch):
    """SIGTERM's close of the run gets ``within_s`` seconds: a store that hangs (here: a send that
    sleeps far longer) does not hold the job; the tag and final status stay spooled and the resume
    sends them before it continues the run."""
    from npf.tracking import Syncer, Tracker

    rid = tmp_path / "job-preempted" / "mlflow_run_id.txt"
    t1 = Tracker("npf-test", "job-preempted", rid, {"x": 1}, {}, local_store)
    t1.log_metrics({"a": 1.0}, 3)
    real_sync = Syncer.sync
    monkeypatch.setattr(Syncer, "sync", lambda self, deadline=None: time.sleep(30) or 0)
    t0 = time.monotonic()
    t1.close("PREEMPTED", 3, within_s=0.5)
    assert time.monotonic() - t0 < 10.0  # the 0.5 s bound plus the join's margin (and a loaded CPU), not 30 s
    spooled = [r["op"] for r in (json.loads(ln) for ln in spool_of(rid).read_text().splitlines())]
    assert spooled == ["metrics", "tags", "end"]
    monkeypatch.setattr(Syncer, "sync", real_sync)
    t2 = Tracker("npf-test", "job-preempted", rid, {"x": 1}, {}, local_store)  # the resumed job
    run = client(local_store).get_run(t2.run_id)
    assert t2.run_id == t1.run_id and run.data.tags["npf.preempted_at_step"] == "3"
    assert run.info.status == "RUNNING" and run.data.tags["npf.resumes"] == "1" and not spool_of(rid).exists()
    assert [(m.step, m.value) for m in client(local_store).get_metric_history(t2.run_id, "a")] == [(3, 1.0)]


def test_a_send_stops_at_its_deadline_and_keeps_the_rest(local_store, tmp_path):
    """``Syncer.sync(deadline)`` sends nothing after the deadline; every record stays spooled."""

    from npf.tracking import Spool, Syncer, Tracker

    rid = tmp_path / "job-deadline" / "mlflow_run_id.txt"
    t = Tracker("npf-test", "job-deadline", rid, {"x": 1}, {}, local_store)
    t.log_metrics({"a": 1.0}, 1)
    t._spool_pending()
    before = spool_of(rid).read_text()
    assert Syncer(local_store, rid, Spool(spool_of(rid))).sync(deadline=time.monotonic() - 1) == 1
    assert spool_of(rid).read_text() == before
    assert Syncer(local_store, rid, Spool(spool_of(rid))).sync(deadline=time.monotonic() + 60) == 0
    assert [(m.step, m.value) for m in client(local_store).get_metric_history(t.run_id, "a")] == [(1, 1.0)]

"""The MLflow UI as a user sees it, over the store of a real (tiny) pipeline run.

``mlflow ui`` is started on a free localhost port over ``results/mlflow.db`` of the own-suite
run shared with tests/test_custom_suite.py (the whole default DAG on the documented example
suite). Exact checks go through the server's REST API (what the UI's pages fetch); the pages
themselves are rendered by headless Chromium (``--dump-dom`` for their text, ``--screenshot``
for a look: set ``NPF_UI_SCREENSHOTS=DIR`` to keep the PNGs). The Chromium tests are skipped
when no Chromium is installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from html import unescape
from pathlib import Path

import pytest
from test_custom_suite import TASKS, clean_env, example_config, own_suite_run

REPO = Path(__file__).resolve().parent.parent
NPF = str(REPO / ".venv" / "bin" / "npf")
CHROMIUM = next(
    (
        p
        for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
        if p and Path(p).exists()
    ),
    None,
)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed")
ML = "workflowType=machine_learning"  # the UI's "Model training" view (its default is the GenAI view)
METHODS = ("npf", "mt", "mhmt")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, data: dict | None = None, timeout: float = 60) -> bytes:
    req = urllib.request.Request(
        url, data=None if data is None else json.dumps(data).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


def api(base: str, endpoint: str, data: dict | None = None, **query) -> dict:
    q = f"?{urllib.parse.urlencode(query)}" if query else ""
    return json.loads(get(f"{base}/api/2.0/mlflow/{endpoint}{q}", data))


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    run = own_suite_run(tmp_path_factory)
    assert run["returncode"] == 0, run["output"][-4000:]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(tmp_path_factory.mktemp("mlflow_ui") / "server.log", "w", buffering=1)
    # as docs/mlflow-ui.md says: `npf ui` in the repository root (it runs `mlflow ui` on results/mlflow.db)
    proc = subprocess.Popen(
        [NPF, "ui", "--port", str(port)],
        cwd=run["repo"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=clean_env(run["repo"]),
    )
    try:
        deadline = time.time() + 180
        while True:
            try:
                if get(f"{base}/health", timeout=5).strip() == b"OK":
                    break
            except OSError:
                pass
            assert proc.poll() is None, f"mlflow ui exited: {Path(log.name).read_text()[-3000:]}"
            assert time.time() < deadline, f"mlflow ui not up after 180 s: {Path(log.name).read_text()[-3000:]}"
            time.sleep(1)
        printed = Path(log.name).read_text()
        assert f"open {base}/#/experiments?{ML}" in printed, printed[:2000]
        exp = api(base, "experiments/get-by-name", experiment_name="npf-pendulum")["experiment"]
        runs = api(base, "runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 1000})["runs"]
        yield {"base": base, "exp": exp, "runs": {r["info"]["run_name"]: r for r in runs}, "run": run}
    finally:
        _stop(proc)
        log.close()


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server we started and its uvicorn workers (its own process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(30)
            return
        except subprocess.TimeoutExpired:
            continue


def expected_run_names() -> list[str]:
    return sorted(
        [f"expert/pendulum/{t}/seed0" for t in TASKS]
        + [f"dataset/pendulum/{t}" for t in TASKS]
        + ["pathways/pendulum/iql/seed0"]
        + [f"train/pendulum/{m}-iql/seed0" for m in METHODS]
        + [f"eval/pendulum/{m}-iql/seed0" for m in METHODS]
    )


# ------------------------------------------------------------------------------------ REST API
def stage_of(r: dict) -> str:
    return next(t["value"] for t in r["data"]["tags"] if t["key"] == "npf.stage")


def test_experiment_and_one_finished_run_per_stage_job(ui):
    assert ui["exp"]["lifecycle_stage"] == "active"
    jobs = {n: r for n, r in ui["runs"].items() if stage_of(r) != "figures_tables"}  # (see the last REST test)
    assert sorted(jobs) == expected_run_names()
    stages = {}
    for name, r in jobs.items():
        assert r["info"]["status"] == "FINISHED", name
        tags = {t["key"]: t["value"] for t in r["data"]["tags"]}
        assert tags["npf.suite"] == "pendulum" and tags["mlflow.runName"] == name
        stages[tags["npf.stage"]] = stages.get(tags["npf.stage"], 0) + 1
    assert stages == {"experts": 2, "datasets": 2, "pathways": 1, "train_offline": 3, "evaluate": 3}


def test_full_config_as_params(ui):
    from npf.tracking import flatten

    want = {k: str(v) for k, v in flatten(example_config()).items()}
    for name, r in ui["runs"].items():
        params = {p["key"]: p["value"] for p in r["data"]["params"]}
        assert params.keys() == want.keys(), name
        assert params["custom_suites.pendulum.tasks.moon.kwargs.g"] == "1.62"
        assert params["custom_suites.pendulum.tasks.moon.max_episode_steps"] == "200"


def test_metrics_grouped_by_prefix_with_history(ui):
    base = ui["base"]
    for m in METHODS:
        r = ui["runs"][f"train/pendulum/{m}-iql/seed0"]
        keys = {x["key"] for x in r["data"]["metrics"]}
        assert {"eval/score_mean", "eval/score/earth", "eval/score/moon", "loss/actor", "loss/critic"} <= keys
        hist = api(base, "metrics/get-history", run_id=r["info"]["run_id"], metric_key="eval/score_mean")["metrics"]
        assert [h["step"] for h in hist] == [100, 200]  # offline.eval_interval 100, 200 updates
        ev = ui["runs"][f"eval/pendulum/{m}-iql/seed0"]
        assert {"final/normalized_mean", "final/normalized/earth"} <= {x["key"] for x in ev["data"]["metrics"]}
    expert = ui["runs"]["expert/pendulum/moon/seed0"]
    assert {"train/episode_return", "eval/return"} <= {x["key"] for x in expert["data"]["metrics"]}
    # every metric name but a few SAC scalars has a prefix/ (the UI groups its charts by it)
    for name, r in ui["runs"].items():
        for x in r["data"]["metrics"]:
            assert "/" in x["key"] or x["key"] in ("alpha", "entropy"), (name, x["key"])


def test_artifacts_masks_policies_and_evaluations(ui):
    base = ui["base"]

    def files(name):
        rid = ui["runs"][name]["info"]["run_id"]
        return rid, {f["path"] for f in api(base, "artifacts/list", run_id=rid).get("files", [])}

    rid, pw = files("pathways/pendulum/iql/seed0")
    assert {"masks.pt", "masks.json"} <= pw
    summary = json.loads(get(f"{base}/get-artifact?" + urllib.parse.urlencode({"path": "masks.json", "run_uuid": rid})))
    assert summary["tasks"] == TASKS  # served by the UI's own artifact endpoint
    assert {"policy.pt", "metrics.json"} <= files("expert/pendulum/earth/seed0")[1]
    assert "metrics.csv" in files("train/pendulum/npf-iql/seed0")[1]
    assert "seed0.json" in files("eval/pendulum/npf-iql/seed0")[1]


def test_figures_and_tables_are_artifacts(ui):
    """The report stage's figures/tables, browsable next to the runs."""
    base = ui["base"]
    runs = {n: r for n, r in ui["runs"].items() if stage_of(r) == "figures_tables"}
    assert list(runs) == ["report/pendulum"] and runs["report/pendulum"]["info"]["status"] == "FINISHED"
    rid = runs["report/pendulum"]["info"]["run_id"]
    folders = {f["path"] for f in api(base, "artifacts/list", run_id=rid).get("files", [])}
    assert folders == {"figures", "tables"}, folders
    for folder, local in (
        ("figures", Path(ui["run"]["reports"]) / "figures"),
        ("tables", Path(ui["run"]["reports"]) / "tables"),
    ):
        listed = {f["path"] for f in api(base, "artifacts/list", run_id=rid, path=folder).get("files", [])}
        assert listed == {f"{folder}/{p.name}" for p in local.iterdir() if not p.name.startswith(".")} and listed, (
            listed
        )


# ------------------------------------------------------------------------------ in the browser
def chromium(url: str, user_dir: Path, screenshot: Path) -> str:
    """Render ``url`` in headless Chromium with 15 s of virtual time (the React app fetches and
    renders): a 1800x1100 screenshot, and the page's visible text (from its DOM), returned."""
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={user_dir}",
        "--window-size=1800,1100",
        "--virtual-time-budget=15000",
        "--hide-scrollbars",
        f"--screenshot={screenshot}",
        "--dump-dom",
        url,
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", r.stdout, flags=re.S)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", text)))


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    d = Path(os.environ.get("NPF_UI_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def not_blank(png: Path) -> None:
    import matplotlib.image as mpimg

    assert png.exists() and png.stat().st_size > 20_000, png
    img = mpimg.imread(png)
    assert img.std() > 0.05, f"{png} looks blank"


@needs_chromium
def test_runs_table(ui, shots, tmp_path):
    eid = ui["exp"]["experiment_id"]
    png = shots / "runs.png"
    text = chromium(f"{ui['base']}/#/experiments/{eid}/runs?{ML}", tmp_path / "c", png)
    assert "npf-pendulum" in text and f"{len(ui['runs'])} matching runs" in text, text[:3000]
    assert "Model training" in text and "Evaluation runs" not in text  # the training-runs view
    for name in ui["runs"]:
        assert name in text, (name, text[:3000])
    not_blank(png)


@needs_chromium
def test_run_page_metrics_params_tags(ui, shots, tmp_path):
    eid, r = ui["exp"]["experiment_id"], ui["runs"]["train/pendulum/npf-iql/seed0"]
    png = shots / "run_train_npf_iql.png"
    text = chromium(f"{ui['base']}/#/experiments/{eid}/runs/{r['info']['run_id']}?{ML}", tmp_path / "c", png)
    assert "train/pendulum/npf-iql/seed0" in text and "Finished" in text, text[:3000]
    for needle in (
        "npf.stage",
        "train_offline",
        "npf.method",
        "eval/score_mean",
        "loss/critic",
        f"Parameters ({len(r['data']['params'])})",
        "custom_suites.pendulum.tasks.moon.kwargs.g",
    ):
        assert needle in text, (needle, text[:3000])
    not_blank(png)


@needs_chromium
def test_artifacts_page_lists_masks(ui, shots, tmp_path):
    eid, r = ui["exp"]["experiment_id"], ui["runs"]["pathways/pendulum/iql/seed0"]
    png = shots / "artifacts_pathways.png"
    text = chromium(f"{ui['base']}/#/experiments/{eid}/runs/{r['info']['run_id']}/artifacts?{ML}", tmp_path / "c", png)
    assert "masks.pt" in text and "masks.json" in text and "No Artifacts Recorded" not in text, text[:3000]
    not_blank(png)


@needs_chromium
def test_metric_charts(ui, shots, tmp_path):
    eid = ui["exp"]["experiment_id"]
    png = shots / "charts.png"
    text = chromium(f"{ui['base']}/#/experiments/{eid}/runs?{ML}&compareRunsMode=CHART", tmp_path / "c", png)
    for section in ("eval", "loss"):  # charts grouped by metric-name prefix
        assert re.search(rf"\b{section} \(\d+\)", text), (section, text[:3000])
    not_blank(png)

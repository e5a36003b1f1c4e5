"""Bring your own tasks: suites declared in the config (``custom_suites``) from stock Gymnasium envs.

* registration and checks at config validation (rescaled actions, kwargs, reward scale, episode
  length; one-line errors naming the task for discrete actions, mismatched sizes, ...);
* the whole default DAG (experts → datasets → pathways → NPF and baselines → evaluation →
  figures/tables) on the documented example suite (docs/examples/pendulum.yaml: Pendulum-v1
  under two gravities) at tiny budgets (tests/data/tiny.yaml), in a scratch copy of the
  repository, exactly as docs/own-suite.md tells a user to run it.

The DAG run is shared with tests/test_mlflow_ui.py, tests/test_docs.py and tests/test_cli.py
through :func:`own_suite_run` (once per pytest session).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml

from npf.config import ConfigError, load, section, suite_tasks, validate

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / ".venv" / "bin"
TINY = REPO / "tests" / "data" / "tiny.yaml"
EXAMPLE = "docs/examples/pendulum.yaml"
TASKS = ["earth", "moon"]
METHODS = ["npf", "mt", "mhmt"]


# ------------------------------------------------------------------------------ shared helpers
def scratch_copy(dest: Path) -> Path:
    """A copy of the working tree (tracked + untracked, not ignored files): a user's fresh clone."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    for rel in filter(None, out.decode().split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


_NO_SLURM: list[str] = []


def _no_slurm_bin() -> str:
    """A folder with an ``scontrol`` that fails at once: every snakemake start loads the Slurm
    executor plugin, which otherwise waits ~10 s for a slurmctld where Slurm is installed but not
    running (this test machine); a laptop without Slurm behaves like this."""
    if not _NO_SLURM:
        d = Path(tempfile.mkdtemp(prefix="npf-noslurm-"))
        (d / "scontrol").write_text("#!/bin/sh\nexit 1\n")
        (d / "scontrol").chmod(0o755)
        _NO_SLURM.append(str(d))
    return _NO_SLURM[0]


def clean_env(repo: str | Path | None = None) -> dict:
    """The environment of a user's shell: the venv first on PATH, results stored under results_dir;
    with ``repo``, its ``npf`` package is the one imported (as an editable install of that clone)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "NPF_DEBUG", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join([str(BIN), _no_slurm_bin(), env.get("PATH", "")])
    if repo is not None:
        env["PYTHONPATH"] = str(repo)
    return env


def snakemake_cmd(*args: str) -> list[str]:
    """``snakemake --cores 2 --configfile <example> tests/data/tiny.yaml ARGS``."""
    return [str(BIN / "snakemake"), "--cores", "2", "--configfile", EXAMPLE, str(TINY), *args]


def _run_once(base: Path, extra: tuple[str, ...]) -> dict:
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = base / "done.json"
        if done.exists():
            return json.loads(done.read_text())
        repo = scratch_copy(base / "repo")
        t0 = time.perf_counter()
        r = subprocess.run(
            snakemake_cmd(*extra), cwd=repo, capture_output=True, text=True, timeout=1500, env=clean_env(repo)
        )
        info = {
            "repo": str(repo),
            "results": str(repo / "results"),
            "reports": str(repo / "reports"),
            "returncode": r.returncode,
            "seconds": time.perf_counter() - t0,
            "output": (r.stdout + r.stderr)[-20000:],
        }
        done.write_text(json.dumps(info))
        return info


def own_suite_run(tmp_path_factory) -> dict:
    """The example own suite's default DAG at tiny budgets, run once per pytest session.

    Returns ``repo`` (the scratch clone), ``results``, ``reports``, ``returncode``, ``seconds``,
    ``output`` (its tail).
    """
    return _run_once(tmp_path_factory.getbasetemp() / "own_suite", ())


def example_config() -> dict:
    """What the workflow runs with: config/config.yaml, the example, tiny.yaml (merged in order)."""
    from npf.config import deep_merge
    from npf.envs import forget_custom_suites

    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for f in (REPO / EXAMPLE, TINY):
        raw = deep_merge(raw, yaml.safe_load(f.read_text()))
    try:
        return validate(raw)
    finally:
        forget_custom_suites()  # leave npf.envs.SUITES as other test modules expect it


# ------------------------------------------------------------------------- registration, checks
@pytest.fixture(autouse=True)
def _forget_custom_suites():
    """Custom suites registered by a test do not leak into later tests (npf.envs.SUITES)."""
    from npf.envs import forget_custom_suites

    yield
    forget_custom_suites()


def suite_cfg(tasks: dict, **extra) -> dict:
    return {"suites": ["mine"], "custom_suites": {"mine": {"tasks": tasks, **extra}}}


PEND = {
    "earth": {"env_id": "Pendulum-v1", "kwargs": {"g": 9.81}},
    "moon": {"env_id": "Pendulum-v1", "kwargs": {"g": 1.62}, "max_episode_steps": 200},
}


def _rollout(env: gym.Env, actions: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    obs, _ = env.reset(seed=seed)
    out_obs, out_rew = [obs], []
    for a in actions:
        obs, r, _te, _tr, _ = env.step(a)
        out_obs.append(obs)
        out_rew.append(r)
    return np.array(out_obs), np.array(out_rew)


def test_declared_suite_is_registered_and_usable():
    from npf.envs import SUITES, env_id, episode_length, is_success_suite, make_env

    cfg = validate(suite_cfg(PEND))
    # schema defaults filled in for every task
    assert cfg["custom_suites"]["mine"]["tasks"]["earth"] == {
        "env_id": "Pendulum-v1",
        "kwargs": {"g": 9.81},
        "max_episode_steps": 200,
        "reward_scale": 1.0,
    }  # resolved
    assert cfg["custom_suites"]["mine"]["success_metric"] is False
    assert SUITES["mine"] == ("earth", "moon") and suite_tasks(cfg, "mine") == TASKS
    assert env_id("mine", "moon") == "npf/mine-moon-v0" and "npf/mine-moon-v0" in gym.registry
    assert episode_length("mine") == 200 and not is_success_suite("mine")

    earth, moon = make_env("mine", "earth", seed=0), make_env("mine", "moon", seed=0)
    # actions rescaled to [-1, 1]: +1 is Pendulum's max torque 2
    assert earth.action_space.low.tolist() == [-1.0] and earth.action_space.high.tolist() == [1.0]
    assert earth.observation_space.shape == (3,)
    assert gym.make("npf/mine-earth-v0").spec.max_episode_steps == 200
    acts = np.ones((5, 1), np.float32)
    o_e, r_e = _rollout(earth, acts)
    o_m, _ = _rollout(moon, acts)
    assert np.allclose(o_e[0], o_m[0]) and not np.allclose(o_e[1:], o_m[1:])  # same start, other gravity
    raw = gym.make("Pendulum-v1", g=9.81)
    o_raw, r_raw = _rollout(raw, 2.0 * acts)  # torque 2 = rescaled action 1
    assert np.allclose(o_raw, o_e, atol=1e-6) and np.allclose(r_raw, r_e, atol=1e-6)
    # construction seed: a plain reset() is reproducible
    assert np.array_equal(make_env("mine", "earth", seed=3).reset()[0], make_env("mine", "earth", seed=3).reset()[0])
    # the time limit is the suite's, not Pendulum's
    env = make_env("mine", "earth", seed=0)
    env.reset()
    steps = 0
    while True:
        steps += 1
        *_, te, tr, _ = env.step(np.zeros(1, np.float32))
        if te or tr:
            break
    assert steps == 200 and tr


def test_reward_scale_episode_length_and_redeclaration():
    from npf.envs import episode_length, make_env

    validate(suite_cfg({"a": {"env_id": "Pendulum-v1", "max_episode_steps": 50}}))
    assert episode_length("mine") == 50
    _, r1 = _rollout(make_env("mine", "a", seed=0), np.full((4, 1), 0.5, np.float32))
    # the same name declared again with other settings replaces the registration
    validate(
        suite_cfg(
            {
                "a": {"env_id": "Pendulum-v1", "max_episode_steps": 70, "reward_scale": 0.1},
                "b": {"env_id": "Pendulum-v1", "max_episode_steps": 70},
            }
        )
    )
    assert episode_length("mine") == 70
    _, r2 = _rollout(make_env("mine", "a", seed=0), np.full((4, 1), 0.5, np.float32))
    assert np.allclose(r2, 0.1 * r1)


def test_stage_process_finds_the_suite_from_its_config():
    """A job process gets the validated config (snakemake.config) but never ran validate():
    ``section`` / ``suite_tasks`` register the custom suites before the stage makes an env."""
    cfg = validate(suite_cfg(PEND))
    code = (
        "import json, sys; from npf.config import section, suite_tasks; from npf.envs import make_env\n"
        "cfg = json.loads(sys.argv[1]); section(cfg, 'experts', 'mine')\n"
        "print(make_env('mine', suite_tasks(cfg, 'mine')[1]).observation_space.shape)"
    )
    r = subprocess.run([str(BIN / "python"), "-c", code, json.dumps(cfg)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "(3,)", r.stderr[-2000:]


class DictObsEnv(gym.Env):
    observation_space = gym.spaces.Dict({"x": gym.spaces.Box(-1, 1, (2,))})
    action_space = gym.spaces.Box(-1, 1, (1,))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


gym.register("npftest/DictObs-v0", entry_point=DictObsEnv, max_episode_steps=10)
gym.register("npftest/NoLimit-v0", entry_point="gymnasium.envs.classic_control.pendulum:PendulumEnv")

REJECT = [
    (
        "discrete",
        suite_cfg({"a": {"env_id": "Pendulum-v1"}, "cart": {"env_id": "CartPole-v1"}}),
        ["custom_suites.mine.tasks.cart", "Discrete(2)", "not continuous"],
    ),
    (
        "obs-size",
        suite_cfg(
            {"a": {"env_id": "Pendulum-v1", "max_episode_steps": 1000}, "inv": {"env_id": "InvertedPendulum-v5"}}
        ),
        ["custom_suites.mine.tasks.inv", "observation size 4 vs 3"],
    ),
    (
        "episode-length",
        suite_cfg({"a": {"env_id": "Pendulum-v1"}, "b": {"env_id": "Pendulum-v1", "max_episode_steps": 9}}),
        ["custom_suites.mine.tasks.b", "episode length 9 vs 200"],
    ),
    ("dict-obs", suite_cfg({"a": {"env_id": "npftest/DictObs-v0"}}), ["custom_suites.mine.tasks.a", "flat (1-D) Box"]),
    (
        "no-time-limit",
        suite_cfg({"a": {"env_id": "npftest/NoLimit-v0"}}),
        ["custom_suites.mine.tasks.a.max_episode_steps", "no registered time limit"],
    ),
    ("unknown-env", suite_cfg({"a": {"env_id": "Walker-v77"}}), ["custom_suites.mine.tasks.a.env_id", "Walker"]),
    (
        "bad-module",
        suite_cfg({"a": {"env_id": "no_such_module:Env-v0"}}),
        ["custom_suites.mine.tasks.a.env_id", "no_such_module"],
    ),
    (
        "bad-kwarg",
        suite_cfg({"a": {"env_id": "Pendulum-v1", "kwargs": {"gravity": 3}}}),
        ["custom_suites.mine.tasks.a", "gravity"],
    ),
    (
        "builtin-name",
        {"custom_suites": {"cheetah": {"tasks": {"a": {"env_id": "Pendulum-v1"}}}}},
        ["custom_suites.cheetah", "built-in"],
    ),
    (
        "bad-suite-name",
        {"custom_suites": {"My-Suite": {"tasks": {"a": {"env_id": "Pendulum-v1"}}}}},
        ["custom_suites", "My-Suite"],
    ),
    ("bad-task-name", suite_cfg({"a/b": {"env_id": "Pendulum-v1"}}), ["custom_suites.mine.tasks", "a/b"]),
    ("no-tasks", suite_cfg({}), ["custom_suites.mine.tasks"]),
    (
        "unknown-key",
        suite_cfg({"a": {"env_id": "Pendulum-v1", "max_steps": 5}}),
        ["custom_suites.mine.tasks.a.max_steps"],
    ),
    (
        "negative-scale",
        suite_cfg({"a": {"env_id": "Pendulum-v1", "reward_scale": -1}}),
        ["custom_suites.mine.tasks.a.reward_scale"],
    ),
    ("undeclared", {"suites": ["mine"]}, ["suites", "'mine'", "custom_suites"]),
    ("undeclared-per-suite", {"experts": {"per_suite": {"mine": {"total_steps": 5}}}}, ["experts.per_suite.mine"]),
    ("undeclared-online", {"online": {"suites": ["mine"]}}, ["online.suites", "'mine'"]),
    ("unknown-task", {**suite_cfg({"a": {"env_id": "Pendulum-v1"}}), "tasks": {"mine": ["b"]}}, ["tasks.mine", "'b'"]),
]


@pytest.mark.parametrize("raw,needles", [r[1:] for r in REJECT], ids=[r[0] for r in REJECT])
def test_invalid_custom_suites_one_line_errors(raw, needles):
    with pytest.raises(ConfigError) as e:
        validate(raw)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("config: "), msg
    for n in needles:
        assert n in msg, f"{n!r} not in: {msg}"


def test_per_suite_overrides_apply_to_custom_suites():
    cfg = validate({**suite_cfg(PEND), "experts": {"per_suite": {"mine": {"total_steps": 123}}}})
    assert section(cfg, "experts", "mine")["total_steps"] == 123


def test_example_config_is_valid():
    cfg = load(REPO / EXAMPLE)
    assert cfg["suites"] == ["pendulum"] and list(cfg["custom_suites"]["pendulum"]["tasks"]) == TASKS


# ------------------------------------------------------------------------------ the whole DAG
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return own_suite_run(tmp_path_factory)


def test_own_suite_dag_runs(run):
    assert run["returncode"] == 0, run["output"][-6000:]
    n = 2 + 2 + 1 + 3 + 3 + 1 + 1  # experts, datasets, pathways (iql), train, evaluate, figures_tables, all
    assert f"{n} of {n} steps (100%) done" in run["output"], run["output"][-3000:]
    print(f"own-suite DAG: {run['seconds']:.0f} s")


def test_own_suite_outputs(run):
    from npf.data import load_dataset
    from npf.expert_policy import load_expert_policy

    assert run["returncode"] == 0
    res = Path(run["results"])
    datasets = {}
    for t in TASKS:
        pol = load_expert_policy(res / f"experts/pendulum/{t}/seed0/policy.pt")
        assert pol(torch.zeros(1, 3), deterministic=True)[0].shape == (1, 1)
        ds = load_dataset(res / f"datasets/pendulum/{t}.npz")
        assert ds.obs_dim == 3 and ds.act_dim == 1 and len(ds) == 2 * 200  # 2 episodes x 200 steps
        assert ds.manifest["env_id"] == f"npf/pendulum-{t}-v0"
        a = ds.arrays["actions"]
        assert a.min() >= -1 and a.max() <= 1  # the rescaled action space
        assert ds.arrays["timeouts"].sum() == 2
        datasets[t] = ds
    assert not np.allclose(datasets["earth"].arrays["rewards"], datasets["moon"].arrays["rewards"])

    masks = torch.load(res / "pathways/pendulum/iql/seed0/masks.pt", weights_only=True)
    assert masks["tasks"] == TASKS and masks["pathways"]["num_tasks"] == 2
    for m in METHODS:
        ev = json.loads((res / f"eval/pendulum/{m}-iql/seed0.json").read_text())
        assert list(ev["tasks"]) == TASKS and ev["metric"] == "normalized" and np.isfinite(ev["normalized_mean"])
    reports = Path(run["reports"])
    table2 = (reports / "tables" / "table2.html").read_text()
    assert "pendulum" in table2 and "NPF-IQL" in table2
    assert (reports / "figures" / "curves_pendulum.png").stat().st_size > 0


def test_own_suite_one_finished_mlflow_run_per_job(run):
    from mlflow.tracking import MlflowClient

    assert run["returncode"] == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{Path(run['results']) / 'mlflow.db'}")
    exp = client.get_experiment_by_name("npf-pendulum")
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("npf.stage") != "figures_tables"]
    names = sorted(r.info.run_name for r in runs)
    want = (
        [f"expert/pendulum/{t}/seed0" for t in TASKS]
        + [f"dataset/pendulum/{t}" for t in TASKS]
        + ["pathways/pendulum/iql/seed0"]
        + [f"train/pendulum/{m}-iql/seed0" for m in METHODS]
        + [f"eval/pendulum/{m}-iql/seed0" for m in METHODS]
    )
    assert names == sorted(want)
    assert all(r.info.status == "FINISHED" for r in runs)
    params = runs[0].data.params
    assert params["custom_suites.pendulum.tasks.moon.kwargs.g"] == "1.62"
    assert params["custom_suites.pendulum.tasks.moon.env_id"] == "Pendulum-v1"


@pytest.mark.slow
def test_full_default_dag_both_algorithms(tmp_path_factory):
    """The complete default offline DAG (NPF, MT, MHMT x IQL, BCQ) on the own suite."""
    info = _run_once(tmp_path_factory.getbasetemp() / "own_suite_both", ("--config", "offline={algos: [iql, bcq]}"))
    assert info["returncode"] == 0, info["output"][-6000:]
    n = 2 + 2 + 2 + 6 + 6 + 1 + 1
    assert f"{n} of {n} steps (100%) done" in info["output"], info["output"][-3000:]
    res = Path(info["results"])
    for m in METHODS:
        for a in ("iql", "bcq"):
            ev = json.loads((res / f"eval/pendulum/{m}-{a}/seed0.json").read_text())
            assert list(ev["tasks"]) == TASKS and np.isfinite(ev["normalized_mean"])

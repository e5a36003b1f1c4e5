"""Offscreen rollouts of a policy (npf/render.py): the image strip and GIF hold the frames of the
rollout they claim, the expert stage logs them to MLflow, and a machine without a usable GL
backend gets a warning, not a failed job."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from npf import render
from npf.algos.sac import SAC, SACConfig
from npf.config import validate
from npf.envs import make_env
from npf.expert_policy import save_expert_policy
from npf.stages.expert import train_expert

torch.set_num_threads(1)


def random_policy(path: Path, suite: str, task: str) -> Path:
    env = make_env(suite, task)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    save_expert_policy(
        path, SAC(obs_dim, act_dim, SACConfig(hidden=(16, 16)), torch.device("cpu"), seed=0), obs_dim, act_dim, {}
    )
    return path


@pytest.fixture(scope="module")
def quadruped_rollout(tmp_path_factory):
    d = tmp_path_factory.mktemp("render")
    policy = random_policy(d / "policy.pt", "quadruped", "hop-turn")
    files = render.render_in_subprocess(policy, "quadruped", "hop-turn", d / "out", 30, every=5, strip=4, size=64)
    return d / "out", files


def test_strip_and_gif_hold_the_rollout_frames(quadruped_rollout):
    out, files = quadruped_rollout
    assert files == [out / "rollout_strip.png", out / "rollout.gif"]
    gif = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(out / "rollout.gif"))]
    strip = np.asarray(Image.open(out / "rollout_strip.png").convert("RGB"))
    # a random policy may fall (episode ends): then fewer than the 1 + 30/5 frames, the last one the fall
    assert 2 <= len(gif) <= 7 and all(f.shape == (64, 64, 3) for f in gif)
    assert strip.shape == (64, 64 * min(4, len(gif)), 3)
    assert strip.std() > 5  # a rendered scene, not a blank image
    # the strip's first and last tiles are the GIF's first and last frames (GIF palette: approximately)
    assert np.abs(strip[:, :64].astype(int) - gif[0].astype(int)).mean() < 12
    assert np.abs(strip[:, -64:].astype(int) - gif[-1].astype(int)).mean() < 12


def test_no_gl_backend_is_a_warning_not_an_error(tmp_path, monkeypatch, capsys):
    policy = random_policy(tmp_path / "policy.pt", "cheetah", "forward")
    monkeypatch.setattr(render, "BACKENDS", ("no-such-backend",))
    assert render.render_in_subprocess(policy, "cheetah", "forward", tmp_path / "out", 5) == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: no rollout rendered for cheetah/forward (no-such-backend:")
    assert "MUJOCO_GL" in err[0]
    assert not (tmp_path / "out" / "rollout.gif").exists()


def test_policy_for_another_task_is_named(tmp_path):
    policy = random_policy(tmp_path / "policy.pt", "mt10", "reach")
    assert render.main([str(policy), "cheetah", "forward", str(tmp_path / "out"), "--steps", "5"]) == 1


def test_expert_stage_logs_the_rollout_to_mlflow(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = validate(
        {
            "results_dir": str(tmp_path / "results"),
            "device": "cpu",
            "experts": {
                "total_steps": 1000,
                "learning_starts": 1000,
                "eval_episodes": 1,
                "render_steps": 20,
                "sac": {"hidden": [16, 16]},
            },
        }
    )
    out = tmp_path / "results" / "experts" / "cheetah" / "forward" / "seed0"
    train_expert(cfg, "cheetah", "forward", 0, out)
    run_id = (out / "mlflow_run_id.txt").read_text().strip()
    listed = {f.path for f in MlflowClient(uri).list_artifacts(run_id, "rollout")}
    assert listed == {"rollout/rollout_strip.png", "rollout/rollout.gif"}
    assert Image.open(out / "rollout" / "rollout_strip.png").size == (240 * 5, 240)  # 1 + 20/5 frames


TRACKING_PROBE = """
import mujoco
from npf.envs import make_env
env = make_env("quadruped", "pace-forward", render_mode="rgb_array", width=96, height=96)
env.reset(seed=0)
u = env.unwrapped
def orange(f):  # the A1's trunk and legs
    f = f.astype(int)
    return int(((f[..., 0] > 150) & (f[..., 1] > 40) & (f[..., 1] < 140) & (f[..., 2] < 80)).sum())
before = orange(env.render())
u.data.qpos[0] += 5.0  # the trunk 5 m further along x
mujoco.mj_forward(u.model, u.data)
print(before, orange(env.render()))
env.close()
"""


def test_quadruped_camera_follows_the_robot():
    """A robot that walked 5 m away is still in the picture (a fixed camera loses it entirely)."""
    import os
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-c", TRACKING_PROBE],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MUJOCO_GL": "egl", "PYOPENGL_PLATFORM": "egl"},
    )
    if r.returncode != 0:
        pytest.skip(f"no EGL rendering here: {r.stderr.strip().splitlines()[-1:]}")
    before, after = map(int, r.stdout.split())
    assert before > 50 and after > 0.5 * before, (before, after)


def test_config_declared_suite_is_rendered_too(tmp_path, monkeypatch):
    """experts.render_steps renders a custom suite's expert as well (the child process registers the
    config's declaration); here a MuJoCo env declared under custom_suites."""
    from mlflow.tracking import MlflowClient

    from npf.envs import forget_custom_suites

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    try:
        cfg = validate(
            {
                "results_dir": str(tmp_path / "results"),
                "device": "cpu",
                "suites": ["balance"],
                "custom_suites": {"balance": {"tasks": {"pole": {"env_id": "InvertedPendulum-v5"}}}},
                "experts": {
                    "total_steps": 1000,
                    "learning_starts": 1000,
                    "eval_episodes": 1,
                    "render_steps": 20,
                    "sac": {"hidden": [16, 16]},
                },
            }
        )
        out = tmp_path / "results" / "experts" / "balance" / "pole" / "seed0"
        train_expert(cfg, "balance", "pole", 0, out)
    finally:
        forget_custom_suites()
    run_id = (out / "mlflow_run_id.txt").read_text().strip()
    listed = {f.path for f in MlflowClient(uri).list_artifacts(run_id, "rollout")}
    assert listed == {"rollout/rollout_strip.png", "rollout/rollout.gif"}
    strip = np.asarray(Image.open(out / "rollout" / "rollout_strip.png"))
    assert strip.std() > 5  # a rendered scene, not a blank image

"""A policy's rollout, rendered offscreen: an image strip (PNG) and an animated GIF.

The expert stage logs both to MLflow so a user can see the gait (``experts.render_steps``).
MuJoCo chooses its OpenGL backend once, when ``mujoco`` is first imported (``MUJOCO_GL``);
a training process has imported it long before, without a headless backend. So the rollout
runs in a child process, ``python -m npf.render``, with ``MUJOCO_GL=egl`` (then ``osmesa``) —
and an unusable backend costs a warning, never the training job.

    python -m npf.render results/experts/quadruped/hop-turn/seed0/policy.pt quadruped hop-turn OUT_DIR
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

BACKENDS = ("egl", "osmesa")


def _make_render_env(suite: str, task: str, size: int):
    from npf.envs import make_env

    # envs without size arguments (Meta-World) are downscaled in _resize
    for kw in ({"width": size, "height": size}, {}):
        try:
            env = make_env(suite, task, render_mode="rgb_array", **kw)
            break
        except (TypeError, ValueError):
            continue
    else:
        raise ValueError(f"{suite}/{task}: cannot build an env with render_mode='rgb_array'")
    if _has_camera(env, "track"):  # the model's tracking camera (HalfCheetah's); else the env's default view
        env.close()
        env = make_env(suite, task, render_mode="rgb_array", camera_name="track", **kw)
    return env


def _has_camera(env, name: str) -> bool:
    import mujoco

    model = getattr(env.unwrapped, "model", None)
    return isinstance(model, mujoco.MjModel) and mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name) >= 0


def _resize(frame: np.ndarray, size: int):
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(frame))
    return img if img.size == (size, size) else img.resize((size, size), Image.BILINEAR)


def render_rollout(
    policy_path: str | Path,
    suite: str,
    task: str,
    out_dir: str | Path,
    steps: int = 300,
    every: int = 5,
    strip: int = 8,
    size: int = 240,
    seed: int = 0,
) -> dict:
    """Run the policy's deterministic action for up to ``steps`` env steps (or until the episode
    ends), keep every ``every``-th frame; write ``rollout.gif`` (all kept frames, real time) and
    ``rollout_strip.png`` (``strip`` frames evenly spaced, left to right). Needs ``MUJOCO_GL``
    set to a working backend before this process imported mujoco."""
    import torch
    from PIL import Image

    from npf.expert_policy import check_expert_policy, load_expert_policy

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_expert_policy(policy_path, suite, task)  # one-line error for a policy of another task's sizes
    policy = load_expert_policy(policy_path)
    env = _make_render_env(suite, task, size)
    try:
        obs, _ = env.reset(seed=seed)
        frames, ret, t = [_resize(env.render(), size)], 0.0, 0
        for t in range(1, steps + 1):
            with torch.no_grad():
                a = policy(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0), deterministic=True)[0]
            obs, r, term, trunc, _ = env.step(a.squeeze(0).numpy())
            ret += float(r)
            if t % every == 0 or term or trunc:
                frames.append(_resize(env.render(), size))
            if term or trunc:
                break
        fps = env.metadata.get("render_fps") or 30
    finally:
        env.close()
    gif, png = out_dir / "rollout.gif", out_dir / "rollout_strip.png"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=int(round(1000 * every / fps)), loop=0)
    pick = np.linspace(0, len(frames) - 1, min(strip, len(frames))).round().astype(int)
    row = Image.new("RGB", (size * len(pick), size))
    for j, i in enumerate(pick):
        row.paste(frames[i], (j * size, 0))
    row.save(png)
    return {"frames": len(frames), "steps": t, "return": ret, "gif": str(gif), "strip": str(png)}


def render_in_subprocess(
    policy_path: str | Path,
    suite: str,
    task: str,
    out_dir: str | Path,
    steps: int,
    timeout: float = 600,
    custom_suite: dict | None = None,
    **kw,
) -> list[Path]:
    """:func:`render_rollout` in a child process with a headless backend; returns the written
    files, or ``[]`` with one ``warning:`` line on stderr when no backend works (or the env
    cannot render). ``custom_suite``: the config's declaration of ``suite`` when it is declared
    under ``custom_suites`` (the child registers it)."""
    args = [sys.executable, "-m", "npf.render", str(policy_path), suite, task, str(out_dir), "--steps", str(steps)]
    if custom_suite is not None:
        args += ["--custom-suite", json.dumps(custom_suite)]
    args += [x for k, v in kw.items() for x in (f"--{k}", str(v))]
    errors = []
    for backend in BACKENDS:
        env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
        try:
            r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            errors.append(f"{backend}: no result in {timeout:.0f} s")
            continue
        if r.returncode == 0:
            return [Path(out_dir) / "rollout_strip.png", Path(out_dir) / "rollout.gif"]
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
        errors.append(f"{backend}: {lines[-1][:200] if lines else f'exit {r.returncode}'}")
    print(f"warning: no rollout rendered for {suite}/{task} ({'; '.join(errors)})", file=sys.stderr, flush=True)
    return []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m npf.render", description=__doc__.splitlines()[0])
    p.add_argument("policy")
    p.add_argument("suite")
    p.add_argument("task")
    p.add_argument("out_dir")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=5)
    p.add_argument("--strip", type=int, default=8)
    p.add_argument("--size", type=int, default=240)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--custom-suite", metavar="JSON", help="the config's custom_suites declaration of SUITE")
    a = p.parse_args(argv)
    try:
        if a.custom_suite:
            from npf.envs import register_custom_suites

            register_custom_suites({"custom_suites": {a.suite: json.loads(a.custom_suite)}})
        r = render_rollout(a.policy, a.suite, a.task, a.out_dir, a.steps, a.every, a.strip, a.size, a.seed)
    except Exception as e:
        print(f"error: {type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}", file=sys.stderr)
        return 1
    print(f"{r['frames']} frames over {r['steps']} steps (return {r['return']:.1f}): {r['strip']}, {r['gif']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Stages ``train_online`` and ``dapd_ablation``: one online run each, plus their tidy exports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from npf import layout
from npf.online.loop import run_online
from npf.online.settings import METHODS, NPF_METHODS, dapd_ablation_settings, online_settings, online_tasks
from npf.online.tidy import export_curves, export_grad_norms


def train_online(
    cfg: Mapping,
    suite: str,
    method: str,
    seed: int,
    out_dir: str | Path,
    stop_after_steps: int | None = None,
    grad_norms_out: str | Path | None = None,
    curves_out: str | Path | None = None,
) -> dict:
    """Stage ``train_online``: one method on the ``suite``'s tasks (global ``tasks:`` subset).
    ``grad_norms_out`` / ``curves_out``: tidy CSVs for Fig. 4 (a) / (b) (NPF methods)."""
    if method not in METHODS:
        raise ValueError(f"online method must be one of {METHODS}, got {method!r}")
    if method not in NPF_METHODS and (grad_norms_out is not None or curves_out is not None):
        raise ValueError(f"{method}: gradient norms per pathway and Fig. 4 curves exist only for {NPF_METHODS}")
    settings = online_settings(cfg)
    if method == "sac-npf-nopretrain":
        settings = replace(settings, pretrain_steps=0)
    tasks = online_tasks(cfg, suite)
    out = run_online(
        cfg,
        suite,
        tasks,
        method,
        seed,
        settings,
        out_dir,
        stage="train_online",
        run_name=f"online/{suite}/{method}/seed{seed}",
        wildcards={"suite": suite, "method": method, "algo": "sac", "seed": seed},
        stop_after_steps=stop_after_steps,
    )
    if "stopped_at" in out:
        return out
    variant = "pretrain" if method == "sac-npf" and settings.pretrain_steps > 0 else "no-pretrain"
    if grad_norms_out is not None:
        export_grad_norms(Path(out_dir) / layout.GRAD_NORMS_FILE, grad_norms_out, variant, seed)
    if curves_out is not None:
        export_curves(Path(out_dir) / layout.CURVE_FILE, curves_out, variant, seed, suite)
    return out


def train_dapd_variant(
    cfg: Mapping,
    task: str,
    variant: str,
    seed: int,
    out_dir: str | Path,
    curves_out: str | Path | None = None,
    stop_after_steps: int | None = None,
) -> dict:
    """Stage ``dapd_ablation``: single-task SAC+NPF on ``online.dapd_ablation.suite``/``task`` with
    one DAPD variant (Figs. 3, 13, 14). ``curves_out``: tidy ``step, task, variant, seed,
    return|success`` CSV."""
    suite = cfg["online"]["dapd_ablation"]["suite"]
    method, settings = dapd_ablation_settings(cfg, variant)
    out = run_online(
        cfg,
        suite,
        [task],
        method,
        seed,
        settings,
        out_dir,
        stage="dapd_ablation",
        run_name=f"dapd/{suite}/{task}/{variant}/seed{seed}",
        wildcards={"suite": suite, "task": task, "variant": variant, "seed": seed},
        stop_after_steps=stop_after_steps,
    )
    if "stopped_at" not in out and curves_out is not None:
        export_curves(Path(out_dir) / layout.CURVE_FILE, curves_out, variant, seed, suite)
    return out

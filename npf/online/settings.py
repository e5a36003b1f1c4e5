"""Settings of the online stages and the DAG targets they produce.

``online`` block of the config → :class:`OnlineSettings`; DAPD-ablation variant names; semantic
checks; the ``(suite, method, seed)`` runs and their final output files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from npf import layout
from npf.algos.sac import SACConfig
from npf.config import deep_merge, online_runs, suite_tasks
from npf.envs import is_success_suite

METHODS = ("sac-npf", "sac-npf-nopretrain", "mt-sac", "mh-sac", "pcgrad")
#: methods with a final evaluation (Table 4); the no-pretrain run only feeds Fig. 4
EVAL_METHODS = ("sac-npf", "mt-sac", "mh-sac", "pcgrad")
NPF_METHODS = ("sac-npf", "sac-npf-nopretrain")
CONDITIONING = {
    "sac-npf": "npf",
    "sac-npf-nopretrain": "npf",
    "mt-sac": "mt",
    "pcgrad": "mt",
    "mh-sac": "mhmt",
    "sac": "mhmt",
}  # "sac": dense single-task SAC (one head) for the DAPD ablation
VARIANT_RE = re.compile(r"^(?:(single-shot)|(dense)|dapd(?:-M(\d+))?(-nothreshold)?)$")
STATE_FORMAT = "npf.online/1"


@dataclass(frozen=True)
class OnlineSettings:
    total_steps: int
    learning_starts: int
    envs_per_task: int
    updates_per_step: float
    batch_size: int
    buffer_size: int
    eval_interval: int
    eval_episodes: int
    checkpoint_every: int
    log_every: int
    grad_norm_every: int
    pretrain_steps: int
    keep_ratio: float
    mask_bias: bool
    dapd_mode: str
    dapd_M: int
    dapd_interval: int
    td_episodes: int
    stop_window: int
    return_threshold: float | None
    success_threshold: float | None
    sac: SACConfig

    @property
    def replay_capacity(self) -> int:
        """Transitions each task's replay buffer holds: never more than the run collects."""
        return min(self.buffer_size, self.total_steps * self.envs_per_task)

    def threshold(self, suite: str) -> float | None:
        return self.success_threshold if is_success_suite(suite) else self.return_threshold


def _sac_config(d: Mapping, batch_size: int, where: str) -> SACConfig:
    d = dict(d)
    if "batch_size" in d and int(d["batch_size"]) != int(batch_size):
        raise ValueError(f"{where}.batch_size: set the batch size with the block's batch_size key, not in sac")
    d["batch_size"] = int(batch_size)
    return SACConfig.from_dict(d, where)


def online_settings(cfg: Mapping) -> OnlineSettings:
    """The ``online`` block of a validated config as :class:`OnlineSettings`."""
    o, d = cfg["online"], cfg["online"]["dapd"]
    return OnlineSettings(
        total_steps=int(o["total_steps"]),
        learning_starts=int(o["learning_starts"]),
        envs_per_task=int(o["envs_per_task"]),
        updates_per_step=float(o["updates_per_step"]),
        batch_size=int(o["batch_size"]),
        buffer_size=int(o["buffer_size"]),
        eval_interval=int(o["eval_interval"]),
        eval_episodes=int(o["eval_episodes"]),
        checkpoint_every=int(o["checkpoint_every"]),
        log_every=int(o["log_every"]),
        grad_norm_every=int(o["grad_norm_every"]),
        pretrain_steps=int(o["pretrain_steps"]),
        keep_ratio=float(cfg["pathways"]["keep_ratio"]),
        mask_bias=bool(cfg["pathways"]["mask_bias"]),
        dapd_mode=d["mode"],
        dapd_M=int(d["M"]),
        dapd_interval=int(d["interval"]),
        td_episodes=int(d["td_episodes"]),
        stop_window=int(d["stop_window"]),
        return_threshold=None if d["return_threshold"] is None else float(d["return_threshold"]),
        success_threshold=None if d["success_threshold"] is None else float(d["success_threshold"]),
        sac=_sac_config(o["sac"], int(o["batch_size"]), "online.sac"),
    )


def parse_variant(variant: str, default_M: int) -> dict:
    """DAPD-ablation variant name → ``{method, mode, M, threshold}``. Names: ``single-shot``,
    ``dense`` (SAC without pathways), ``dapd`` / ``dapd-M<k>`` (M = k; default ``dapd.M``), and
    either with ``-nothreshold`` (no stop rule), e.g. ``dapd-nothreshold``, ``dapd-M10-nothreshold``."""
    m = VARIANT_RE.match(variant)
    if not m:
        raise ValueError(
            f"unknown DAPD ablation variant {variant!r} (use single-shot, dense, dapd-M<k>, "
            f"dapd-nothreshold or dapd-M<k>-nothreshold)"
        )
    single, dense, M, nothr = m.groups()
    if dense:
        return {"method": "sac", "mode": "dapd", "M": default_M, "threshold": True}
    if single:
        return {"method": "sac-npf", "mode": "single_shot", "M": 1, "threshold": True}
    M = default_M if M is None else int(M)
    if M < 1:
        raise ValueError(f"DAPD ablation variant {variant!r}: M must be ≥ 1")
    return {"method": "sac-npf", "mode": "dapd", "M": M, "threshold": nothr is None}


def dapd_ablation_settings(cfg: Mapping, variant: str) -> tuple[str, OnlineSettings]:
    """``(method, settings)`` of one DAPD-ablation variant: the ``online`` settings overridden by
    the non-null keys of ``online.dapd_ablation`` (its ``sac`` merged over ``online.sac``);
    single task, so no pretraining."""
    a = cfg["online"]["dapd_ablation"]
    base = online_settings(cfg)
    over = {
        k: a[k]
        for k in (
            "total_steps",
            "learning_starts",
            "batch_size",
            "buffer_size",
            "eval_interval",
            "eval_episodes",
            "checkpoint_every",
        )
        if a.get(k) is not None
    }
    batch = int(over.get("batch_size", base.batch_size))
    sac = _sac_config(deep_merge(cfg["online"]["sac"], a["sac"]), batch, "online.dapd_ablation.sac")
    v = parse_variant(variant, base.dapd_M)
    settings = replace(
        base,
        **over,
        sac=sac,
        pretrain_steps=0,
        dapd_mode=v["mode"],
        dapd_M=v["M"],
        keep_ratio=float(a["keep_ratio"]) if a.get("keep_ratio") is not None else base.keep_ratio,
        return_threshold=(None if a["return_threshold"] is None else float(a["return_threshold"]))
        if v["threshold"]
        else None,
        success_threshold=base.success_threshold if v["threshold"] else None,
    )
    return v["method"], settings


def online_tasks(cfg: Mapping, suite: str) -> list[str]:
    return suite_tasks(cfg, suite)


def online_target_files(cfg: Mapping) -> list[str]:
    """Every final output of the online stages: eval JSONs (Table 4), Fig. 4 gradient norms and
    curves, DAPD-ablation curves (Figs. 3, 13, 14)."""
    r = cfg["results_dir"]
    out = []
    for suite, method, seed in online_runs(cfg):
        if method in EVAL_METHODS:
            out.append(layout.eval_json(r, suite, method, "sac", seed))
        if method in NPF_METHODS:
            out += [layout.grad_norms(r, suite, method, seed), layout.pretrain_curves(r, suite, method, seed)]
    a = cfg["online"]["dapd_ablation"]
    out += [
        layout.dapd_tidy_curve(r, task, variant, seed)
        for task in a["tasks"]
        for variant in a["variants"]
        for seed in a["seeds"]
    ]
    return out

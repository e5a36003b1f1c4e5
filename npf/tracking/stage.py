"""The tracker of one pipeline stage's job: experiment per suite, the full config as params, and
the standard tags (stage, config hash, git commit, wildcards)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from npf.tracking.store import tracking_uri
from npf.tracking.tracker import Tracker


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    """Commit of the npf checkout (not of wherever the job happens to run)."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def stage_tracker(
    cfg: dict,
    stage: str,
    suite: str,
    run_name: str,
    run_id_file: str | os.PathLike,
    wildcards: dict[str, Any],
    fresh: bool = False,
) -> Tracker:
    """Tracker for one pipeline job: experiment per suite, full config as params, standard tags."""
    tcfg = cfg.get("tracking", {})
    uri = tracking_uri(cfg.get("results_dir", "results"), tcfg.get("uri"))
    tags = {
        "npf.stage": stage,
        "npf.config_hash": config_hash(cfg),
        "mlflow.source.git.commit": git_commit(),
        **{f"npf.{k}": str(v) for k, v in wildcards.items()},
    }
    return Tracker(
        f"{tcfg.get('experiment_prefix', 'npf')}-{suite}", run_name, run_id_file, cfg, tags, uri, fresh=fresh
    )

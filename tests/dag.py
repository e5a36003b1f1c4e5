"""Plan the workflow (``snakemake -n``) for a config written by a test; what it would run."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(REPO / ".venv" / "bin" / "snakemake")


def dry_run(tmp_path: Path, config_yaml: str) -> str:
    """``snakemake -n`` with ``config_yaml`` (results under ``tmp_path``); its output, asserting success."""
    (tmp_path / "c.yaml").write_text(config_yaml)
    r = subprocess.run(
        [SNAKEMAKE, "-n", "--configfile", str(tmp_path / "c.yaml"), "--config", f"results_dir={tmp_path / 'results'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    return out

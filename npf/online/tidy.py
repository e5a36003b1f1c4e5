"""The online stages' CSV files: the run's own ``metrics.csv`` / ``grad_norms.csv`` and the tidy
exports the figures read (Figs. 3, 4, 13, 14)."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from npf.data import atomic_write_bytes
from npf.envs import is_success_suite

GRAD_FIELDS = ["step", "updates", "phase", "task", "grad_norm", "grad_norm_critic"]


def write_csv(path: Path, rows: Sequence[Mapping], fields: Sequence[str] | None = None) -> None:
    fields = list(fields or (rows[0].keys() if rows else []))

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)

    atomic_write_bytes(Path(path), write)


def score_fields(tasks: Sequence[str]) -> list[str]:
    return (
        ["step", "updates", "score_mean"]
        + [f"score/{t}" for t in tasks]
        + ["return_mean"]
        + [f"return/{t}" for t in tasks]
    )


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def export_curves(metrics_csv: str | Path, out_csv: str | Path, variant: str, seed: int, suite: str) -> None:
    """``metrics.csv`` → tidy ``step, task, variant, seed, success|return`` (Figs. 3, 13, 14, 4b)."""
    key = "success" if is_success_suite(suite) else "return"
    rows = []
    for r in read_csv(Path(metrics_csv)):
        for col, v in r.items():
            if col.startswith("score/"):
                rows.append(
                    {
                        "step": int(r["step"]),
                        "task": col[len("score/") :],
                        "variant": variant,
                        "seed": seed,
                        key: float(v),
                    }
                )
    write_csv(Path(out_csv), rows, ["step", "task", "variant", "seed", key])


def export_grad_norms(grad_csv: str | Path, out_csv: str | Path, variant: str, seed: int) -> None:
    """``grad_norms.csv`` → tidy ``step, task, grad_norm, variant, seed`` (+ critic, updates, phase)."""
    rows = [
        {
            "step": int(r["step"]),
            "task": r["task"],
            "grad_norm": float(r["grad_norm"]),
            "variant": variant,
            "seed": seed,
            "grad_norm_critic": float(r["grad_norm_critic"]),
            "updates": int(r["updates"]),
            "phase": r["phase"],
        }
        for r in read_csv(Path(grad_csv))
    ]
    write_csv(
        Path(out_csv), rows, ["step", "task", "grad_norm", "variant", "seed", "grad_norm_critic", "updates", "phase"]
    )

"""Table 8: the policy network's weights for N tasks, N separate networks against NPF's pathways.

Inputs (under ``results_dir``): ``pathways/{suite}/{algo}/seed{s}/masks.pt`` (or ``masks.json``
carrying parameter counts), read by :func:`load_param_counts`; and for the per-pathway version the
masks the NPF runs trained with, ``runs/{suite}/npf-{algo}/seed{s}/final.pt``
(:func:`load_pathway_counts`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from npf import layout
from npf import paper_numbers as paper
from npf.report.labels import MISSING, PAPER, SUITE_ORDER, preferred_first, suite_label
from npf.report.tables.scores import STD_DDOF, mean_std_count
from npf.report.tables.table import Table, fmt, fmt_count


def _flat_masks(masks: Mapping, n: int) -> np.ndarray:
    """[N, P] bool: one network's bit-packed masks (a Pathways state's ``masks[role]``) per task."""
    flat = []
    for m in masks.values():
        shape = [int(s) for s in m["shape"]]
        size = int(np.prod(shape))
        bits = np.unpackbits(np.asarray(m["bits"], dtype=np.uint8))[:size].astype(bool)
        flat.append(bits.reshape(n, -1))
    return np.concatenate(flat, axis=1)


def _counts_from_pt(path: Path, role: str) -> dict | None:
    from npf import checkpoint as ckpt  # torch: imported only when a masks.pt is read

    state = ckpt.load(path)
    pw = state.get("pathways", state)
    masks = pw.get("masks", {}).get(role)
    if not masks:
        return None
    n = int(pw["num_tasks"])
    f = _flat_masks(masks, n)
    return {
        "n_tasks": n,
        "keep_ratio": float(pw.get("keep_ratio", math.nan)),
        "dense": int(f.shape[1]),
        "pathway": float(f.sum(1).mean()),
        "union": int(f.any(0).sum()),
    }


def _counts_from_json(path: Path, role: str) -> dict | None:
    s = json.loads(path.read_text())
    r = s.get("roles", {}).get(role)
    total = None if r is None else next((r[k] for k in ("maskable_params", "num_params", "params") if k in r), None)
    if total is None:
        return None
    n = len(s["tasks"])
    out = {
        "n_tasks": n,
        "keep_ratio": float(s.get("keep_ratio", math.nan)),
        "dense": int(total),
        "pathway": float(r["density"]) * total,
        "union": float(r["union_density"]) * total,
    }
    return out


def load_param_counts(results_dir: str | Path, role: str = "actor") -> pd.DataFrame | None:
    """Table 8's inputs: per (suite, algo, seed) the policy network's maskable weight count
    (``dense``, per task), the mean pathway size (``pathway``) and the union of the tasks'
    pathways (``union``). Read from ``masks.pt`` (exact), else from ``masks.json`` when it
    carries a ``maskable_params`` count. None when nothing is there."""
    rows = []
    for d in layout.find(layout.pathways_dir, results_dir):
        suite, algo, seed = d.parent.parent.name, d.parent.name, d.name[len("seed") :]
        if not seed.isdigit():
            continue
        c = None
        if (d / layout.MASKS_FILE).exists():
            c = _counts_from_pt(d / layout.MASKS_FILE, role)
        elif (d / layout.MASKS_SUMMARY_FILE).exists():
            c = _counts_from_json(d / layout.MASKS_SUMMARY_FILE, role)
        if c is not None:
            rows.append({"suite": suite, "algo": algo, "seed": int(seed), **c})
    return pd.DataFrame(rows) if rows else None


def table8(counts: pd.DataFrame | Mapping | None, ddof: int = STD_DDOF) -> Table | None:
    """Policy-network weights: (A) N separate dense networks, (B) N separate networks pruned to
    the keep ratio, (C) NPF's union of the N pathways (mean ± std over seeds, and as % of A).

    ``counts``: a frame (or dict of columns) with ``algo, seed, n_tasks, dense`` (maskable weights
    of one network), ``union`` (weights in any task's pathway), optional ``suite`` (default
    mt10), ``pathway`` (mean per-task pathway size) and ``keep_ratio``.
    """
    if counts is None:
        return None
    c = pd.DataFrame(counts).copy()
    if c.empty:
        return None
    if "suite" not in c:
        c["suite"] = "mt10"
    if "pathway" not in c:
        c["pathway"] = c["keep_ratio"] * c["dense"]
    c["A"] = c["n_tasks"] * c["dense"]
    c["B"] = c["n_tasks"] * c["pathway"]
    c["C"] = c["union"].astype(float)
    c["Cpct"] = c["C"] / c["A"] * 100.0
    rows = {
        k: {"Suite": None, "Policy weights": lab}
        for k, lab in (
            ("A", "(A) N separate networks, no pruning"),
            ("B", "(B) N separate networks, pruned to the pathway size"),
            ("C", "(C) NPF: union of the N pathways"),
            ("Cpct", "(C) as % of (A)"),
        )
    }
    out = []
    for suite in preferred_first(c["suite"], SUITE_ORDER):
        cs = c[c["suite"] == suite]
        n_tasks = sorted(set(cs["n_tasks"].astype(int)))
        block = {
            k: dict(v, Suite=suite_label(suite, n_tasks[0] if len(n_tasks) == 1 else None)) for k, v in rows.items()
        }
        for algo in preferred_first(cs["algo"], ("iql", "bcq", "sac")):
            g = cs[cs["algo"] == algo]
            # one column per algorithm: suites measured with different seed counts share it
            col, seeds = f"ours ({algo.upper()})", f" ({len(g)} seed{'s' if len(g) > 1 else ''})"
            for k in ("A", "B", "C"):
                s = mean_std_count(g[k], ddof)
                block[k][col] = fmt_count(s["mean"], s["std"] if k == "C" else None) + (seeds if k == "C" else "")
            s = mean_std_count(g["Cpct"], ddof)
            block["Cpct"][col] = f"{fmt(s['mean'], s['std'])} %"
        p = paper.TABLE8.get(suite)
        if p is not None:
            col = f"{PAPER} (IQL)"
            block["A"][col] = fmt_count(p["separate_dense"].mean)
            block["B"][col] = fmt_count(p["separate_pruned"].mean)
            block["C"][col] = fmt_count(p["npf_union"].mean, p["npf_union"].std)
            block["Cpct"][col] = f"{p['npf_union_percent_of_A'].fmt()} %"
        out += list(block.values())
    frame = pd.DataFrame(out)
    frame = frame[["Suite", "Policy weights"] + [k for k in frame.columns if k not in ("Suite", "Policy weights")]]
    return Table(
        "table8",
        "Table 8: policy-network weights for N tasks: separate networks vs NPF",
        frame.fillna(MISSING),
        label_columns=2,
        notes=[
            "Counts are maskable weights of the policy (actor) network (biases excluded, as "
            "the paper's 1,092,608). (A) = N × dense; (B) = N × mean pathway size; (C) = weights "
            f"in at least one task's pathway, mean ± std over seeds (population std, ddof={ddof})."
        ],
    )


TABLE8_PATHWAY_COLUMNS = ["suite", "algo", "seed", "task", "pathway", "dense", "n_tasks", "union"]


def load_pathway_counts(results_dir: str | Path, role: str = "actor") -> pd.DataFrame:
    """Per trained NPF run and task: the actor weights in the task's pathway (``pathway``: nonzero
    mask entries), the actor's maskable weights (``dense``: one dense actor of the same width),
    ``n_tasks`` and the run's ``union`` (weights in any task's pathway). Read from the runs'
    ``runs/{suite}/npf-{algo}/seed{s}/final.pt`` (the masks NPF trained with); empty if none."""
    from npf import checkpoint as ckpt  # torch: imported only when a run is read

    rows = []
    for path in layout.find(layout.offline_final, results_dir, method="npf"):
        suite, algo, seed = path.parts[-4], path.parts[-3][len("npf-") :], path.parts[-2][len("seed") :]
        if not seed.isdigit():
            continue
        saved = ckpt.load(path)
        pw = saved.get("pathways") if isinstance(saved, dict) else None
        masks = (pw or {}).get("masks", {}).get(role)
        if not masks:
            continue
        n = int(pw["num_tasks"])
        f = _flat_masks(masks, n)
        tasks = list(saved.get("tasks") or range(n))
        union = int(f.any(0).sum())
        for task, nnz in zip(tasks, f.sum(1)):
            rows.append(
                {
                    "suite": suite,
                    "algo": algo,
                    "seed": int(seed),
                    "task": str(task),
                    "pathway": int(nnz),
                    "dense": int(f.shape[1]),
                    "n_tasks": n,
                    "union": union,
                }
            )
    return pd.DataFrame(rows, columns=TABLE8_PATHWAY_COLUMNS)


def table8_pathways(counts: pd.DataFrame, ddof: int = STD_DDOF) -> Table | None:
    """Actor weights per suite and algorithm: one task's NPF pathway (mean ± std over tasks, all
    seeds pooled), all N pathways together (their union; mean ± std over seeds), N separate
    single-task actors of the same width (N × dense) and the one dense actor, each also as % of
    the dense actor. ``counts``: :func:`load_pathway_counts`'s frame. None when it is empty."""
    if counts is None or counts.empty:
        return None
    out = []
    for suite in preferred_first(counts["suite"], SUITE_ORDER):
        cs = counts[counts["suite"] == suite]
        for algo in preferred_first(cs["algo"], ("iql", "bcq", "sac")):
            g = cs[cs["algo"] == algo]
            dense, n = int(g["dense"].iloc[0]), int(g["n_tasks"].iloc[0])
            seeds = g.drop_duplicates("seed")
            task = mean_std_count(g["pathway"], ddof)
            union = mean_std_count(seeds["union"], ddof)
            pct = lambda v: v / dense * 100.0  # noqa: B023 (used within this iteration)
            head = {"Suite": suite_label(suite), "Algorithm": algo.upper(), "Seeds": len(seeds), "Tasks": n}
            out += [
                {
                    **head,
                    "Actor": "NPF: one task's pathway (mean ± std over tasks)",
                    "Weights": fmt_count(task["mean"], task["std"]),
                    "% of dense actor": fmt(pct(task["mean"]), pct(task["std"])),
                },
                {
                    **head,
                    "Actor": f"NPF: all {n} pathways (union; mean ± std over seeds)",
                    "Weights": fmt_count(union["mean"], union["std"]),
                    "% of dense actor": fmt(pct(union["mean"]), pct(union["std"])),
                },
                {
                    **head,
                    "Actor": f"{n} separate single-task actors, same width",
                    "Weights": fmt_count(n * dense),
                    "% of dense actor": fmt(pct(n * dense), None),
                },
                {
                    **head,
                    "Actor": "one dense actor (shared network)",
                    "Weights": fmt_count(dense),
                    "% of dense actor": fmt(100.0, None),
                },
            ]
    return Table(
        "table8_pathways",
        "Table 8: actor weights of the NPF pathways vs separate and dense actors",
        pd.DataFrame(out),
        label_columns=5,
        notes=[
            "Weights: the actor's maskable weights (biases excluded, as the paper's 1,092,608), "
            "counted from the masks of the trained NPF runs (runs/*/npf-*/seed*/final.pt). "
            f"Per-task row: nonzero mask entries of each task, mean ± std over tasks × seeds; "
            f"union row: mean ± std over seeds (population std, ddof={ddof})."
        ],
    )


def write_table8_pathways(results_dir: str | Path, out_dir: str | Path, ddof: int = STD_DDOF) -> list[Path]:
    """``table8_pathways.{csv,md}`` under ``out_dir`` (the CSV: one row per run × task, the tidy
    counts); nothing when no trained NPF run is there. Returns the written paths."""
    counts = load_pathway_counts(results_dir)
    table = table8_pathways(counts, ddof)
    if table is None:
        return []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path, write in (
        (out / "table8_pathways.csv", lambda f: counts.to_csv(f, index=False)),
        (out / "table8_pathways.md", lambda f: f.write_text(table.to_markdown())),
    ):
        tmp = path.with_suffix(path.suffix + ".tmp")
        write(tmp)
        tmp.replace(path)
        written.append(path)
    return written

"""Table 8 from the trained runs: actor weights per NPF pathway vs separate and dense actors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from npf.pathways import Pathways
from npf.report.tables.weights import load_pathway_counts, table8_pathways, write_table8_pathways

SHAPES = {"net.0.weight": (4, 5), "net.2.weight": (2, 4)}  # 28 maskable actor weights
TASKS = ["reach", "push", "door-open"]


def masks_from_flat(kept: list[set[int]]) -> dict:
    """{name: [N, *shape] bool}: task n keeps the flat indices kept[n] (layers in SHAPES order)."""
    flat = np.zeros((len(kept), 28), bool)
    for n, idx in enumerate(kept):
        flat[n, sorted(idx)] = True
    out, start = {}, 0
    for name, shape in SHAPES.items():
        size = shape[0] * shape[1]
        out[name] = torch.from_numpy(flat[:, start : start + size].reshape(len(kept), *shape).copy())
        start += size
    return out


def write_run(root, suite, algo, seed, kept):
    pw = Pathways({"actor": masks_from_flat(kept), "critic": masks_from_flat([set(range(28))] * len(kept))}, 0.2)
    path = root / "runs" / suite / f"npf-{algo}" / f"seed{seed}" / "final.pt"
    path.parent.mkdir(parents=True)
    torch.save({"pathways": pw.state_dict(), "tasks": TASKS, "method": "npf", "algo_name": algo}, path)


def test_counts_and_table_from_hand_made_masks(tmp_path):
    write_run(tmp_path, "mt10", "iql", 0, [set(range(5)), set(range(3, 10)), {20, 21, 22}])  # 5, 7, 3; union 13
    write_run(tmp_path, "mt10", "iql", 1, [set(range(6)), set(range(6)), set(range(6))])  # 6 each; union 6
    # an MT run has no pathways and is not counted
    (tmp_path / "runs" / "mt10" / "mt-iql" / "seed0").mkdir(parents=True)
    torch.save({"tasks": TASKS}, tmp_path / "runs" / "mt10" / "mt-iql" / "seed0" / "final.pt")
    c = load_pathway_counts(tmp_path)
    assert c["pathway"].tolist() == [5, 7, 3, 6, 6, 6] and c["task"].tolist() == TASKS * 2
    assert set(c["dense"]) == {28} and c.groupby("seed")["union"].first().tolist() == [13, 6]

    t = table8_pathways(c)
    rows = {
        r["Actor"].split(" (")[0].split(":")[0] + (" union" if "all 3" in r["Actor"] else ""): r
        for r in t.frame.to_dict("records")
    }
    task_vals = np.array([5, 7, 3, 6, 6, 6])
    per_task = rows["NPF"]
    assert per_task["Weights"] == f"{task_vals.mean():,.0f} ± {task_vals.std():,.0f}"
    assert per_task["% of dense actor"] == f"{task_vals.mean() / 28 * 100:.2f} ± {task_vals.std() / 28 * 100:.2f}"
    union = rows["NPF union"]
    assert union["Weights"] == "10 ± 4"  # mean and population std of (13, 6): 9.5 -> 10, 3.5 -> 4
    assert union["% of dense actor"] == f"{9.5 / 28 * 100:.2f} ± {3.5 / 28 * 100:.2f}"
    separate = next(r for k, r in rows.items() if k.startswith("3 separate"))
    assert separate["Weights"] == "84" and separate["% of dense actor"] == "300.00"
    dense = next(r for k, r in rows.items() if k.startswith("one dense"))
    assert dense["Weights"] == "28" and dense["% of dense actor"] == "100.00"
    assert {r["Seeds"] for r in rows.values()} == {2} and {r["Tasks"] for r in rows.values()} == {3}

    files = write_table8_pathways(tmp_path, tmp_path / "tables")
    assert [f.name for f in files] == ["table8_pathways.csv", "table8_pathways.md"]
    back = pd.read_csv(files[0])
    assert back["pathway"].tolist() == [5, 7, 3, 6, 6, 6]
    assert "one dense actor" in files[1].read_text()


def test_no_npf_runs_no_table(tmp_path):
    assert load_pathway_counts(tmp_path).empty
    assert table8_pathways(load_pathway_counts(tmp_path)) is None
    assert write_table8_pathways(tmp_path, tmp_path / "tables") == [] and not (tmp_path / "tables").exists()


def test_counts_match_pathways_density(tmp_path):
    """Independent route: Pathways.density / union_density of the same random masks."""
    rng = np.random.default_rng(0)
    masks = {name: torch.from_numpy(rng.random((3, *shape)) < 0.3) for name, shape in SHAPES.items()}
    pw = Pathways({"actor": masks}, 0.3)
    path = tmp_path / "runs" / "cheetah" / "npf-bcq" / "seed4" / "final.pt"
    path.parent.mkdir(parents=True)
    torch.save({"pathways": pw.state_dict(), "tasks": TASKS}, path)
    c = load_pathway_counts(tmp_path)
    assert c["pathway"].to_numpy() == pytest.approx(pw.density("actor") * 28)
    assert c["union"].iloc[0] == round(pw.union_density("actor") * 28)
    assert (c["suite"].iloc[0], c["algo"].iloc[0], c["seed"].iloc[0]) == ("cheetah", "bcq", 4)
    assert not math.isnan(c["pathway"].mean())

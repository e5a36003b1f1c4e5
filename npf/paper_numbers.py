"""The paper's published numbers, as data (``paper/npf-paper.md``: Tables 2, 3, 4, 6, 7, 8).

Every number is a :class:`PaperNumber` (mean ± std as printed in the paper). ``reported=True``
marks a *baseline* whose number we take from the paper as published and do not attribute to our
own runs: methods the paper only cites from other work (SAC+ME, PCGrad, Soft-Modularization,
CARE in Table 4 — all from Sodhani et al. 2021; CDS in Table 7 — Yu et al. 2021) and the paper's
offline baselines Offline-MT / Offline-MHMT (Table 3). NPF's own numbers (the targets this
pipeline tries to reproduce) have ``reported=False``. Tables must keep reported numbers in rows
or columns labelled "reported", never in our columns.

Keys follow the pipeline's names: suites ``cheetah``, ``cheetah_velocity``, ``quadruped``,
``mt10``; method-algo keys ``"{method}-{algo}"`` (``npf-bcq``, ``mt-iql``, …); online methods by
method name (``sac-npf``, ``pcgrad``, …); task names as in :mod:`npf.envs` (``vel-0.5``, …).

Transcription notes (where the paper's text is ambiguous):
- Table 2, constrained velocity, NPF-BCQ: printed ``100 ± 0.038`` (PAPER.md rounds to 0.04).
- Table 3, Offline-MT IQL: printed ``79,1 ± 26.81`` — a typo for 79.1.
- Table 6, velocity 3.0, NPF-BCQ: printed ``99.96 ± .07``.
- Table 4 lists parameter counts (17k, 340k, 135k, 486k, 344k) and reductions relative to
  SAC+NPF (20x, 8x, 28x, 20x); stored as ``params``.
- Table 8 counts *weights* of the IQL policy network (1,092,608 = 39·1024 + 1024·1024 + 1024·4;
  biases excluded) over the 10 MT10 tasks; (C) is averaged over 10 seeds.
- The quadruped rows (the paper's forward, backward, hopturn, sidestep) are keyed by the
  pipeline's task names (pace-forward, pace-backward, hop-turn, sidestep).
"""

from __future__ import annotations

from dataclasses import dataclass

from npf.envs.metaworld import MT10_TASKS


@dataclass(frozen=True)
class PaperNumber:
    mean: float
    std: float | None = None
    reported: bool = False  # a baseline taken as published (cited work or the paper's baseline runs)
    source: str = "this paper"
    params: int | None = None  # parameter count printed next to it (Table 4)

    def fmt(self, digits: int = 2) -> str:
        if self.std is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


P = PaperNumber
SODHANI = "Sodhani et al. 2021"
YU_CDS = "Yu et al. 2021 (CDS)"
PAPER_BASELINE = "this paper (baseline run)"

#: Table 2 — offline normalized score (mean ± std over seeds 0–4), NPF only.
TABLE2: dict[str, dict[str, PaperNumber]] = {
    "cheetah": {"npf-bcq": P(87.20, 2.34), "npf-iql": P(89.67, 12.44)},
    "cheetah_velocity": {"npf-bcq": P(100.0, 0.038), "npf-iql": P(99.88, 0.40)},
    "quadruped": {"npf-bcq": P(115.35, 0.70), "npf-iql": P(116.71, 0.57)},
}

#: Table 3 — MT10 offline success rate (%), 10 seeds.
TABLE3: dict[str, dict[str, PaperNumber]] = {
    "mt10": {
        "npf-bcq": P(100.0, 0.0),
        "npf-iql": P(97.3, 7.17),
        "mt-bcq": P(81.5, 24.15, reported=True, source=PAPER_BASELINE),
        "mt-iql": P(79.1, 26.81, reported=True, source=PAPER_BASELINE),
        "mhmt-bcq": P(95.9, 10.44, reported=True, source=PAPER_BASELINE),
        "mhmt-iql": P(96.5, 7.10, reported=True, source=PAPER_BASELINE),
    },
}

#: Table 4 — MT10 online success rate (%) after 2M updates per task, seeds 0–9.
TABLE4: dict[str, dict[str, PaperNumber]] = {
    "mt10": {
        "sac-npf": P(77.4, 13.12, params=17_000),
        "pcgrad": P(72.0, 2.2, reported=True, source=SODHANI, params=340_000),
        "soft-mod": P(73.0, 4.3, reported=True, source=SODHANI, params=135_000),
        "care": P(84.0, 5.1, reported=True, source=SODHANI, params=486_000),
        "sac-me": P(74.0, 4.3, reported=True, source=SODHANI, params=344_000),
    },
}

#: Display names of Table 4's cited baselines (our own online methods are named in npf.report.labels).
TABLE4_LABELS = {
    "sac-npf": "SAC+NPF",
    "pcgrad": "PCGrad",
    "soft-mod": "Soft-Modularization",
    "care": "CARE",
    "sac-me": "SAC+ME",
}

#: Table 6 — per-task normalized score, NPF.
TABLE6: dict[str, dict[str, dict[str, PaperNumber]]] = {
    "cheetah": {
        "forward": {"npf-bcq": P(99.68, 0.04), "npf-iql": P(99.98, 0.04)},
        "backward": {"npf-bcq": P(96.51, 0.19), "npf-iql": P(98.68, 0.83)},
        "jump": {"npf-bcq": P(71.38, 9.46), "npf-iql": P(74.99, 20.1)},
        "forward-jump": {"npf-bcq": P(85.25, 0.54), "npf-iql": P(87.35, 27.0)},
        "backward-jump": {"npf-bcq": P(83.3, 1.46), "npf-iql": P(87.34, 14.23)},
    },
    "cheetah_velocity": {
        "vel-0.5": {"npf-bcq": P(100.04, 0.03), "npf-iql": P(99.1, 2.18)},
        "vel-1.0": {"npf-bcq": P(100.07, 0.03), "npf-iql": P(100.05, 0.04)},
        "vel-1.5": {"npf-bcq": P(100.03, 0.05), "npf-iql": P(99.99, 0.06)},
        "vel-2.0": {"npf-bcq": P(100.07, 0.01), "npf-iql": P(100.07, 0.04)},
        "vel-2.5": {"npf-bcq": P(100.02, 0.04), "npf-iql": P(100.04, 0.03)},
        "vel-3.0": {"npf-bcq": P(99.96, 0.07), "npf-iql": P(100.01, 0.03)},
    },
    "quadruped": {
        "pace-forward": {"npf-bcq": P(116.19, 0.14), "npf-iql": P(116.92, 0.51)},
        "pace-backward": {"npf-bcq": P(110.98, 1.21), "npf-iql": P(112.93, 1.05)},
        "hop-turn": {"npf-bcq": P(122.43, 0.47), "npf-iql": P(123.33, 0.29)},
        "sidestep": {"npf-bcq": P(111.8, 0.96), "npf-iql": P(113.69, 0.43)},
    },
}

_MT10_ORDER = MT10_TASKS  # the paper's Table 7 rows, in MT10's order
_T7_IQL = {"reach": (93.0, 22.14), "pick-place": (95.0, 15.81), "drawer-open": (85.0, 33.75)}
_T7_CDS = {
    "door-open": (58.4, 9.3),
    "drawer-open": (57.9, 16.2),
    "drawer-close": (98.8, 0.7),
    "door-close": (57.2, 16.2),
}


def _table7() -> dict[str, dict[str, PaperNumber]]:
    out: dict[str, dict[str, PaperNumber]] = {}
    for t in (*_MT10_ORDER, "door-close"):
        row: dict[str, PaperNumber] = {}
        if t != "door-close":  # not an MT10 task: only CDS reports it
            row["npf-bcq"] = P(100.0, 0.0)
            row["npf-iql"] = P(*_T7_IQL.get(t, (100.0, 0.0)))
        if t in _T7_CDS:
            row["cds"] = P(*_T7_CDS[t], reported=True, source=YU_CDS)
        out[t] = row
    out["overall"] = {
        "npf-bcq": P(100.0, 0.0),
        "npf-iql": P(97.3, 7.17),
        "cds": P(72.0, 26.2, reported=True, source=YU_CDS),
    }
    return out


#: Table 7 — per-task MT10 offline success rate (%); "overall" is the paper's last row. CDS
#: covers 4 environments (incl. door-close, not in MT10) over 6 seeds.
TABLE7: dict[str, dict[str, dict[str, PaperNumber]]] = {"mt10": _table7()}

#: Table 8 — MT10 policy-network weight counts (IQL policy; weights only).
TABLE8: dict[str, dict] = {
    "mt10": {
        "n_tasks": 10,
        "keep_ratio": 0.05,
        "dense_per_task": 1_092_608,
        "separate_dense": P(10_926_080),  # (A) 10 separate networks, no pruning
        "separate_pruned": P(546_304),  # (B) 10 separate networks, 95% pruned
        "npf_union": P(198_956, 7_636),  # (C) NPF: union of the 10 pathways
        "npf_union_percent_of_A": P(1.82, 0.07),
    },
}

TABLES = {"table2": TABLE2, "table3": TABLE3, "table4": TABLE4, "table6": TABLE6, "table7": TABLE7, "table8": TABLE8}


def paper_number(table: str, *keys: str) -> PaperNumber | None:
    """``paper_number("table2", "cheetah", "npf-iql")`` → the number, or None if not published."""
    node = TABLES[table]
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return None
        node = node[k]
    return node if isinstance(node, PaperNumber) else None

"""Every path under a results directory, in one place.

Each function takes the results directory ``r`` and a run's keys and returns the path as a string.
:func:`pattern` calls one with each key left as its Snakemake wildcard (``{suite}``): that is how the
rules spell their outputs. :func:`find` calls one with ``*`` for each key and lists what exists: that
is how the report finds finished runs. Inside a run's folder the stages name their files with the
``*_FILE`` constants.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

FINAL_FILE = "final.pt"
CURVE_FILE = "metrics.csv"
CHECKPOINT_FILE = "checkpoint.pt"
RUN_ID_FILE = "mlflow_run_id.txt"
RUN_ID_SUFFIX = ".mlflow_run_id.txt"  # beside a single-file output: datasets, masks, evaluations
POLICY_FILE = "policy.pt"
EXPERT_METRICS_FILE = "metrics.json"
GRAD_NORMS_FILE = "grad_norms.csv"
MASKS_FILE = "masks.pt"
MASKS_SUMMARY_FILE = "masks.json"

#: the top-level folders whose presence marks a results directory
TOP_LEVEL = ("eval", "runs", "pathways", "online", "sample_complexity")


def _fill(fn: Callable[..., str], r: str, value: str, fixed: dict) -> str:
    names = list(inspect.signature(fn).parameters)[1:]
    unknown = set(fixed) - set(names)
    if unknown:
        raise TypeError(f"{fn.__name__} has no key {sorted(unknown)[0]!r} (keys: {', '.join(names)})")
    return fn(r, **{n: fixed.get(n, value.format(n)) for n in names})


def pattern(fn: Callable[..., str], r: str, **fixed) -> str:
    """``fn``'s path with every key not in ``fixed`` left as its wildcard: ``pattern(dataset, r)`` is
    ``{r}/datasets/{suite}/{task}.npz``."""
    return _fill(fn, r, "{{{}}}", fixed)


def find(fn: Callable[..., str], r: str | Path, **fixed) -> list[Path]:
    """The existing paths under ``r`` that ``fn`` names, every key not in ``fixed`` matching anything;
    sorted."""
    relative = _fill(fn, ".", "*", fixed).removeprefix("./")
    return sorted(Path(r).glob(relative))


# ------------------------------------------------------------------------------ experts, datasets
def expert_dir(r, suite, task, seed) -> str:
    return f"{r}/experts/{suite}/{task}/seed{seed}"


def expert_policy(r, suite, task, seed) -> str:
    return f"{expert_dir(r, suite, task, seed)}/{POLICY_FILE}"


def expert_metrics(r, suite, task, seed) -> str:
    return f"{expert_dir(r, suite, task, seed)}/{EXPERT_METRICS_FILE}"


def dataset_dir(r, suite) -> str:
    return f"{r}/datasets/{suite}"


def dataset(r, suite, task) -> str:
    return f"{dataset_dir(r, suite)}/{task}.npz"


def dataset_manifest(r, suite, task) -> str:
    """The dataset's JSON beside it: reference scores and how it was collected."""
    return f"{dataset_dir(r, suite)}/{task}.json"


# ------------------------------------------------------------------------------ offline
def pathways_dir(r, suite, algo, seed) -> str:
    return f"{r}/pathways/{suite}/{algo}/seed{seed}"


def masks(r, suite, algo, seed) -> str:
    return f"{pathways_dir(r, suite, algo, seed)}/{MASKS_FILE}"


def masks_summary(r, suite, algo, seed) -> str:
    return f"{pathways_dir(r, suite, algo, seed)}/{MASKS_SUMMARY_FILE}"


def offline_run_dir(r, suite, method, algo, seed) -> str:
    return f"{r}/runs/{suite}/{method}-{algo}/seed{seed}"


def offline_final(r, suite, method, algo, seed) -> str:
    return f"{offline_run_dir(r, suite, method, algo, seed)}/{FINAL_FILE}"


def offline_curve(r, suite, method, algo, seed) -> str:
    return f"{offline_run_dir(r, suite, method, algo, seed)}/{CURVE_FILE}"


def eval_json(r, suite, method, algo, seed) -> str:
    """A run's final evaluation; online runs have ``algo`` ``sac``."""
    return f"{r}/eval/{suite}/{method}-{algo}/seed{seed}.json"


# ------------------------------------------------------------------------------ sample complexity
def sample_complexity_dir(r) -> str:
    return f"{r}/sample_complexity"


def sc_pathways_dir(r, suite, algo, size, seed) -> str:
    return f"{sample_complexity_dir(r)}/pathways/{suite}/{algo}/n{size}/seed{seed}"


def sc_masks(r, suite, algo, size, seed) -> str:
    return f"{sc_pathways_dir(r, suite, algo, size, seed)}/{MASKS_FILE}"


def sc_masks_summary(r, suite, algo, size, seed) -> str:
    return f"{sc_pathways_dir(r, suite, algo, size, seed)}/{MASKS_SUMMARY_FILE}"


def sc_run_dir(r, suite, method, algo, size, seed) -> str:
    return f"{sample_complexity_dir(r)}/runs/{suite}/{method}-{algo}/n{size}/seed{seed}"


def sc_final(r, suite, method, algo, size, seed) -> str:
    return f"{sc_run_dir(r, suite, method, algo, size, seed)}/{FINAL_FILE}"


def sc_curve(r, suite, method, algo, size, seed) -> str:
    return f"{sc_run_dir(r, suite, method, algo, size, seed)}/{CURVE_FILE}"


def sc_eval_json(r, suite, method, algo, size, seed) -> str:
    return f"{sample_complexity_dir(r)}/eval/{suite}/{method}-{algo}/n{size}/seed{seed}.json"


def sc_scores(r) -> str:
    """Fig. 5's tidy scores of every sample-complexity run."""
    return f"{sample_complexity_dir(r)}/scores.csv"


# ------------------------------------------------------------------------------ online
def online_run_dir(r, suite, method, seed) -> str:
    return f"{r}/online/runs/{suite}/{method}/seed{seed}"


def online_final(r, suite, method, seed) -> str:
    return f"{online_run_dir(r, suite, method, seed)}/{FINAL_FILE}"


def online_curve(r, suite, method, seed) -> str:
    return f"{online_run_dir(r, suite, method, seed)}/{CURVE_FILE}"


def grad_norms(r, suite, method, seed) -> str:
    """Fig. 4's tidy per-pathway gradient norms of one SAC+NPF run."""
    return f"{grad_norms_table(r).removesuffix('.csv')}/{suite}/{method}/seed{seed}.csv"


def pretrain_curves(r, suite, method, seed) -> str:
    """Fig. 4b's tidy success/return curves of one SAC+NPF run."""
    return f"{pretrain_curves_table(r).removesuffix('.csv')}/{suite}/{method}/seed{seed}.csv"


def dapd_run_dir(r, task, variant, seed) -> str:
    return f"{r}/online/dapd/{task}/{variant}/seed{seed}"


def dapd_curve(r, task, variant, seed) -> str:
    return f"{dapd_run_dir(r, task, variant, seed)}/{CURVE_FILE}"


def dapd_tidy_curve(r, task, variant, seed) -> str:
    """Figs. 3/13/14's tidy curve of one DAPD-ablation run."""
    return f"{dapd_curves_table(r).removesuffix('.csv')}/{task}/{variant}/seed{seed}.csv"


# the tidy tables the figures read: the CSV itself, or (as the workflow writes them) a folder of the
# same name without ``.csv`` holding one CSV per run (npf.report.figures.build.read_tidy)
def dapd_curves_table(r) -> str:
    return f"{r}/online/dapd_curves.csv"


def grad_norms_table(r) -> str:
    return f"{r}/online/grad_norms.csv"


def pretrain_curves_table(r) -> str:
    return f"{r}/online/pretrain_curves.csv"


# ------------------------------------------------------------------------------ logs, records, report
def logs_dir(r) -> str:
    return f"{r}/logs"


def log(r, rule, run) -> str:
    """A job's log; ``run`` names the job's output below its kind, e.g. ``cheetah/npf-iql/seed0``."""
    return f"{logs_dir(r)}/{rule}/{run}.log"


def config_record(r, config_hash) -> str:
    """The resolved config that the jobs whose runs carry ``config_hash`` ran with (npf.provenance)."""
    return f"{r}/configs/{config_hash}.yaml"


def mlflow_db(r) -> str:
    """The local MLflow store (sqlite), unless ``MLFLOW_TRACKING_URI`` names another."""
    return f"{r}/mlflow.db"


def report_run_id(r, suite) -> str:
    """The MLflow run id of a suite's figures-and-tables run."""
    return f"{r}/report/{suite}{RUN_ID_SUFFIX}"


def figures_dir(reports) -> str:
    return f"{reports}/figures"


def tables_dir(reports) -> str:
    return f"{reports}/tables"

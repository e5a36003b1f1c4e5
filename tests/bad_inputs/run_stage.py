"""Run pipeline stage functions exactly as the Snakemake stage scripts do: inside
``workflow/scripts/_stage.stage`` (one-line errors, exit 1; preemption, exit 75), with the config
validated like the Snakefile does.

    python tests/bad_inputs/run_stage.py SPEC.json            # one job, this process
    python tests/bad_inputs/run_stage.py --many CASES.json OUT # many jobs, one forked child each

SPEC: ``{"stage": "train_expert", "config": {...}, "args": [...], "kwargs": {...}, "env": {...}}``
(``config`` is the raw config, validated first; ``stage`` is one of STAGES or ``module:function``,
e.g. ``npf.online.stages:train_online``).
With ``--many``, CASES is ``{"name": SPEC, ...}``; each child's stdout+stderr goes to
``OUT/<name>.out`` and its exit status to ``OUT/<name>.rc``. Forking after the imports keeps a
case at ~0.1 s instead of a fresh interpreter's seconds.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "workflow" / "scripts"))

import torch  # noqa: E402

torch.set_num_threads(1)

from _stage import stage  # noqa: E402

from npf.config import validate  # noqa: E402
from npf.stages import dataset, expert, offline  # noqa: E402

STAGES = {
    "train_expert": expert.train_expert,
    "collect_dataset": dataset.collect_dataset,
    "discover_pathways": offline.discover_pathways,
    "train_offline": offline.train_offline,
    "evaluate_run": offline.evaluate_run,
}


def run(spec: dict) -> None:
    """Run one job; exits like a stage script (0, 1 or 75)."""
    os.environ.update(spec.get("env", {}))
    with stage(SimpleNamespace(log=[spec["log"]] if spec.get("log") else [])):
        cfg = validate(spec["config"])
        name = spec["stage"]
        if name in STAGES:
            fn = STAGES[name]
        else:
            import importlib

            module, _, attr = name.partition(":")
            fn = getattr(importlib.import_module(module), attr)
        fn(cfg, *spec.get("args", []), **spec.get("kwargs", {}))


def run_many(cases: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, spec in cases.items():
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # child: its own stdout/stderr file, exits with the stage's code
            code = 0
            try:
                fd = os.open(out / f"{name}.out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                run(spec)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 99
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        (out / f"{name}.rc").write_text(str(os.waitstatus_to_exitcode(status)))


if __name__ == "__main__":
    if sys.argv[1] == "--many":
        run_many(json.loads(Path(sys.argv[2]).read_text()), Path(sys.argv[3]))
    else:
        run(json.loads(Path(sys.argv[1]).read_text()))

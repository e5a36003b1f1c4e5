"""``npf`` command line: what is awkward through Snakemake alone.

    npf suites [--config FILE ...]  list suites, tasks and their Gymnasium ids (custom suites of the configs too)
    npf validate [CONFIG ...]       validate a config (files merged in order) and print the planned jobs
    npf results [RESULTS_DIR]       summarise finished evaluations as a table (--tasks: per task)
    npf publish --out PAGE DIR ...  rebuild the results page (tables beside the paper's, PNGs) from results dirs
    npf export FINAL TASK OUT       export one task's pathway policy from a trained NPF run
    npf ui [RESULTS_DIR]            start the MLflow UI on the results' store, print the URL to open

Config files are merged in order over config/config.yaml, as ``snakemake --configfile A B``
does. Errors are one line on stderr with a non-zero exit; ``--verbose`` shows the traceback.
Guides: docs/index.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _merged_config(paths: list[str]) -> dict:
    """config/config.yaml with the given files merged over it in order, validated (this registers
    the custom suites)."""
    import yaml

    from npf.config import ConfigError, deep_merge, validate

    raw: dict = {}
    for path in [str(REPO / "config" / "config.yaml"), *paths]:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a config file must be a mapping of keys, not a {type(data).__name__}")
        raw = deep_merge(raw, data)
    return validate(raw)


def _describe_task(spec, task: str) -> str:
    kw = spec.tasks[task]
    if not spec.custom:
        return ""
    args = ", ".join(f"{k}={v}" for k, v in kw["env_kwargs"].items())
    scale = f" x{kw['reward_scale']:g} reward" if kw["reward_scale"] != 1.0 else ""
    return f"  = {kw['base_id']}({args}){scale}"


def cmd_suites(args) -> int:
    from npf.envs import SUITE_SPECS, env_id, make_env

    if args.config:
        cfg = _merged_config(args.config)
        selected = set(cfg["suites"])
    else:
        selected = set()
    for suite, spec in SUITE_SPECS.items():
        kind = "custom" if spec.custom else "built-in"
        extra = ", success %" if spec.success_metric else ""
        dims = ""
        if spec.custom:
            env = make_env(suite, spec.task_names()[0])
            dims = f", obs {env.observation_space.shape[0]}, act {env.action_space.shape[0]}"
            env.close()
        mark = "  [in suites]" if suite in selected else ""
        print(f"{suite}  ({kind}, {len(spec.tasks)} tasks, {spec.episode_length}-step episodes{dims}{extra}){mark}")
        for t in spec.task_names():
            print(f"  {t:24s} {env_id(suite, t)}{_describe_task(spec, t)}")
    return 0


def cmd_validate(args) -> int:
    from npf.config import suite_tasks

    cfg = _merged_config(args.configs)
    plan = ", ".join(
        f"{s} ({len(suite_tasks(cfg, s))} tasks{', custom' if s in cfg['custom_suites'] else ''})"
        for s in cfg["suites"]
    )
    if not cfg["suites"]:
        plan = f"none (online only: {', '.join(cfg['online']['suites'])})"
    print(f"config: valid; suites: {plan}; results in {cfg['results_dir']}/")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "--quiet", "rules"]
    if args.configs:
        cmd += ["--configfile", *[str(Path(p).resolve()) for p in args.configs]]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
        print(errors[0] if errors else (out.stderr.strip().splitlines() or ["snakemake failed"])[-1], file=sys.stderr)
        return 1
    lines = out.stdout.splitlines() + out.stderr.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Job stats")), None)
    if start is None:
        print("nothing to be done: every output is up to date")
        return 0
    for line in lines[start:]:
        if not line.strip() and line is not lines[start]:
            break
        print(line)
    return 0


def cmd_results(args) -> int:
    from npf.report.tables.scores import load_eval_results, summarize

    df = load_eval_results(args.results_dir)
    if args.suite:
        df = df[df["suite"] == args.suite]
    if df.empty:
        print(
            f"no evaluation results under {args.results_dir}/eval" + (f"/{args.suite}" if args.suite else ""),
            file=sys.stderr,
        )
        return 1
    by = ["suite", "metric", "method", "algo"] + (["task"] if args.tasks else [])
    summary = summarize(df, by).rename(columns={"n": "seeds"})
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(
        "metric: normalized = normalized score (0 random, 100 expert), success = success %; "
        "mean and std over seeds of the mean over tasks" + (" (per task: over seeds)" if args.tasks else "")
    )
    return 0


def cmd_publish(args) -> int:
    from npf.report.publish.durations import parse_duration
    from npf.report.publish.page import publish

    wall = {}
    for item in args.wall_time:
        d, sep, dur = item.rpartition("=")
        if not sep or not d:
            raise ValueError(f"--wall-time {item!r}: expected RESULTS_DIR=DURATION, e.g. results/small=2h50m")
        wall[d] = parse_duration(dur)
    written = publish(args.results_dirs, args.out, args.readme, wall, args.figures_dir)
    pngs = sum(p.suffix == ".png" for p in written)
    print(f"wrote {args.out}" + (f" and {args.readme}" if args.readme else "") + f"; {pngs} figure(s)")
    return 0


def cmd_export(args) -> int:
    from npf.export import export_task_policy

    info = export_task_policy(args.final, args.task, args.out)
    print(
        f"wrote {args.out}: {info['nnz']} pathway weights of {info['dense']} "
        f"({100 * info['nnz'] / info['dense']:.2f}%), "
        f"{info['bytes']} bytes"
    )
    return 0


ML_VIEW = "#/experiments?workflowType=machine_learning"  # the UI's "Model training" view (not GenAI)


def cmd_ui(args) -> int:
    from npf import layout

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri and not uri.startswith("sqlite:"):
        print(f"runs are on the tracking server {uri} (MLFLOW_TRACKING_URI): open {uri.rstrip('/')}/{ML_VIEW}")
        return 0
    db = Path(layout.mlflow_db(Path(args.results_dir).resolve()))
    if not db.exists():
        raise FileNotFoundError(f"{db}: no MLflow store there (run the pipeline first, or name its results_dir)")
    print(f"MLflow UI of {db}\nopen http://{args.host}:{args.port}/{ML_VIEW}  (Ctrl-C stops it)", flush=True)
    exe = Path(sys.executable).with_name("mlflow")
    cmd = [
        str(exe) if exe.exists() else "mlflow",
        "ui",
        "--backend-store-uri",
        f"sqlite:///{db}",
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--workers",
        "1",
    ]
    os.execvp(cmd[0], cmd)
    return 1  # not reached


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="npf", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--verbose", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("suites", help="list suites and tasks (built-in, and the custom suites of --config files)")
    s.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="config file(s) whose custom_suites to list too (repeatable; merged in order)",
    )
    s.set_defaults(fn=cmd_suites)
    v = sub.add_parser("validate", help="validate config files and print the planned jobs")
    v.add_argument("configs", nargs="*", help="config files, merged in order over the defaults")
    v.set_defaults(fn=cmd_validate)
    r = sub.add_parser("results", help="summarise finished evaluations")
    r.add_argument("results_dir", nargs="?", default="results")
    r.add_argument("--tasks", action="store_true", help="one row per task")
    r.add_argument("--suite", help="only this suite")
    r.set_defaults(fn=cmd_results)
    pb = sub.add_parser("publish", help="rebuild the results page from results directories (generated regions only)")
    pb.add_argument(
        "results_dirs",
        nargs="*",
        metavar="RESULTS_DIR",
        help="one per config run, e.g. results/small (none: every table says 'not measured yet')",
    )
    pb.add_argument("--out", default="docs/results.md", help="the page (default: docs/results.md)")
    pb.add_argument("--readme", help="also fill this README's table2-readme region (e.g. README.md)")
    pb.add_argument("--figures-dir", help="where the PNGs go (default: the page's path without .md)")
    pb.add_argument(
        "--wall-time",
        action="append",
        default=[],
        metavar="DIR=DURATION",
        help="a results dir's measured end-to-end wall time, e.g. results/small=2h50m (repeatable)",
    )
    pb.set_defaults(fn=cmd_publish)
    e = sub.add_parser("export", help="export one task's pathway policy (sparse, no optimizer state)")
    e.add_argument("final", help="a trained NPF run's final.pt")
    e.add_argument("task", help="task name")
    e.add_argument("out", help="output file (.pt)")
    e.set_defaults(fn=cmd_export)
    u = sub.add_parser("ui", help="start the MLflow UI over RESULTS_DIR/mlflow.db (localhost only)")
    u.add_argument("results_dir", nargs="?", default="results")
    u.add_argument("--port", type=int, default=5000)
    u.add_argument("--host", default="127.0.0.1", help="bind address (default: localhost only)")
    u.set_defaults(fn=cmd_ui)
    args = p.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except BrokenPipeError:  # `npf suites | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, OSError, KeyError, RuntimeError, ImportError) as e:
        if args.verbose:
            raise
        print(f"error: {e}".splitlines()[0], file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

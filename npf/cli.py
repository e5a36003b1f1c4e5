"""``npf`` command line: what is awkward through Snakemake alone.

    npf suites                      list suites, tasks and their Gymnasium ids
    npf validate [CONFIG ...]       validate a config (files merged in order) and print the planned jobs
    npf results [RESULTS_DIR]       summarise finished evaluations as a table
    npf export FINAL TASK OUT       export one task's pathway policy from a trained NPF run

Errors are one line on stderr with a non-zero exit; ``--verbose`` shows the traceback.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cmd_suites(args) -> int:
    from npf.envs import SUITES, env_id, episode_length

    for suite, tasks in SUITES.items():
        print(f"{suite}  ({len(tasks)} tasks, {episode_length(suite)}-step episodes)")
        for t in tasks:
            print(f"  {t:24s} {env_id(suite, t)}")
    return 0


def cmd_validate(args) -> int:
    import yaml

    from npf.config import ConfigError, deep_merge, validate

    raw: dict = {}
    for path in [str(REPO / "config" / "config.yaml"), *args.configs]:
        try:
            raw = deep_merge(raw, yaml.safe_load(Path(path).read_text()) or {})
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
    validate(raw)
    print("config: valid")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "--quiet", "rules"]
    for path in args.configs:
        cmd += ["--configfile", str(Path(path).resolve())]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "snakemake failed", file=sys.stderr)
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
    from npf.tables import load_eval_results, summarize

    df = load_eval_results(args.results_dir)
    if df.empty:
        print(f"no evaluation results under {args.results_dir}/eval")
        return 1
    summary = summarize(df)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    return 0


def cmd_export(args) -> int:
    from npf.export import export_task_policy

    info = export_task_policy(args.final, args.task, args.out)
    print(f"wrote {args.out}: {info['nnz']} pathway weights of {info['dense']} ({100 * info['nnz'] / info['dense']:.2f}%), "
          f"{info['bytes']} bytes")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="npf", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--verbose", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("suites", help="list suites and tasks").set_defaults(fn=cmd_suites)
    v = sub.add_parser("validate", help="validate config files and print the planned jobs")
    v.add_argument("configs", nargs="*", help="config files, merged in order over the defaults")
    v.set_defaults(fn=cmd_validate)
    r = sub.add_parser("results", help="summarise finished evaluations")
    r.add_argument("results_dir", nargs="?", default="results")
    r.set_defaults(fn=cmd_results)
    e = sub.add_parser("export", help="export one task's pathway policy (sparse, no optimizer state)")
    e.add_argument("final", help="a trained NPF run's final.pt")
    e.add_argument("task", help="task name")
    e.add_argument("out", help="output file (.pt)")
    e.set_defaults(fn=cmd_export)
    args = p.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except (ValueError, OSError, KeyError, RuntimeError) as e:
        if args.verbose:
            raise
        print(f"error: {e}".splitlines()[0], file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

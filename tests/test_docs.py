"""The docs' commands work: every ```bash tested block of docs/*.md runs, as a user would run it.

Convention (also in docs/index.md, "How these pages are tested"):

* ```bash tested — run by this test; ```bash tested-slow — run only with ``-m slow`` (and a
  page's fast test stops at its first slow block, since later blocks may need its outputs);
  plain ```bash blocks are not run (cluster-only, interactive, or long);
* the tested blocks of one page run in order in one bash shell (``set -euo pipefail``), in a
  fresh copy of the repository (a user's clone, the package imported from it), with the
  venv's ``bin`` first on ``PATH`` (as after ``source .venv/bin/activate``);
* the only substitution: every ``snakemake`` call gets ``tests/data/tiny.yaml`` appended to its
  config files (tiny budgets: the same jobs, seconds each);
* the pages about the own-suite example's results (SHARED) run in the copy where
  tests/test_custom_suite.py ran that example, so its ``snakemake`` block has nothing to do.

Also checked: every relative link of README.md and docs/ points to an existing file, the README
links every guide and docs/index.md every page, and the docs' YAML examples of custom suites
validate.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_custom_suite import BIN, TINY, clean_env, own_suite_run, scratch_copy

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
PAGES = sorted(p.name for p in DOCS.glob("*.md"))
SHARED = {"own-suite.md", "data-formats.md", "mlflow-ui.md"}
GUIDES = ["index.md", "reproduce-a-table.md", "cluster.md", "mlflow-ui.md", "own-suite.md", "data-formats.md"]
FENCE = re.compile(r"^```(\S*)[ \t]*(\S*)[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)

WRAPPER = '''#!{python}
"""snakemake, with tests/data/tiny.yaml appended to the config files (tests/test_docs.py)."""
import os, sys
args = sys.argv[1:]
if not any(a in ("-h", "--help", "--version", "--lint") for a in args):
    out, i, added = [], 0, False
    while i < len(args):
        out.append(args[i]); i += 1
        if out[-1] in ("--configfile", "--configfiles"):
            while i < len(args) and not args[i].startswith("-"):
                out.append(args[i]); i += 1
            out.append({tiny!r}); added = True
    args = out if added else out + ["--configfile", {tiny!r}]
os.execv({real!r}, [{real!r}, *args])
'''


def blocks(page: str) -> list[tuple[int, str, str]]:
    """(line, kind, code) of the page's bash blocks; kind is '', 'tested' or 'tested-slow'."""
    text = (DOCS / page).read_text()
    out = []
    for m in FENCE.finditer(text):
        if m.group(1) == "bash":
            out.append((text[: m.start()].count("\n") + 1, m.group(2), m.group(3)))
    return out


def script(page: str, slow: bool) -> str | None:
    parts = []
    for line, kind, code in blocks(page):
        if kind == "tested-slow" and not slow:
            break
        if kind in ("tested", "tested-slow"):
            parts.append(f"echo '@@ docs/{page}:{line}' >&2\n{code}")
    return "set -euo pipefail\n" + "\n".join(parts) if parts else None


def run_page(page: str, slow: bool, tmp_path: Path, tmp_path_factory) -> None:
    code = script(page, slow)
    if code is None:
        pytest.skip(f"docs/{page} has no tested blocks")
    if page in SHARED:
        run = own_suite_run(tmp_path_factory)
        assert run["returncode"] == 0, run["output"][-4000:]
        repo = Path(run["repo"])
    else:
        repo = scratch_copy(tmp_path / "repo")
    wrapper_bin = tmp_path / "bin"
    wrapper_bin.mkdir()
    w = wrapper_bin / "snakemake"
    w.write_text(WRAPPER.format(python=str(BIN / "python"), tiny=str(TINY), real=str(BIN / "snakemake")))
    w.chmod(0o755)
    env = clean_env(repo)  # the clone's npf is imported, as an editable install of it would give
    env["PATH"] = f"{wrapper_bin}{os.pathsep}{env['PATH']}"
    env["VIRTUAL_ENV"] = str(BIN.parent)
    r = subprocess.run(
        ["bash", "-c", code], cwd=repo, env=env, capture_output=True, text=True, timeout=3000 if slow else 600
    )
    if r.returncode != 0:
        where = re.findall(r"^@@ (\S+)$", r.stderr, re.M)
        pytest.fail(
            f"block at {where[-1] if where else '?'} failed (exit {r.returncode}):\n"
            f"--- stdout\n{r.stdout[-4000:]}\n--- stderr\n{r.stderr[-6000:]}"
        )


@pytest.mark.parametrize("page", PAGES)
def test_docs_page(page, tmp_path, tmp_path_factory):
    run_page(page, False, tmp_path, tmp_path_factory)


SLOW_PAGES = [p for p in PAGES if any(kind == "tested-slow" for _, kind, _ in blocks(p))]


@pytest.mark.slow
@pytest.mark.parametrize("page", SLOW_PAGES)
def test_docs_page_slow(page, tmp_path, tmp_path_factory):
    run_page(page, True, tmp_path, tmp_path_factory)


def test_every_bash_block_is_marked_or_plain():
    for page in PAGES:
        for line, kind, _ in blocks(page):
            assert kind in ("", "tested", "tested-slow"), f"docs/{page}:{line}: unknown block kind {kind!r}"


def test_links_resolve_and_readme_links_every_page():
    link = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")
    for md in [REPO / "README.md", *sorted(DOCS.glob("*.md"))]:
        for target, _ in link.findall(md.read_text()):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            assert (md.parent / target).exists(), f"{md.relative_to(REPO)}: broken link {target}"
    readme = (REPO / "README.md").read_text()
    for page in GUIDES:
        assert f"(docs/{page})" in readme, f"README.md does not link docs/{page}"
    index = (DOCS / "index.md").read_text()
    for page in PAGES:
        assert page == "index.md" or f"]({page}" in index, f"docs/index.md does not link docs/{page}"
    for example in sorted((DOCS / "examples").glob("*.yaml")):
        assert f"examples/{example.name}" in (DOCS / "own-suite.md").read_text(), example


def test_yaml_examples_with_custom_suites_validate():
    """Every ```yaml block of the docs that declares custom_suites is a valid config."""
    import yaml

    from npf.config import validate
    from npf.envs import forget_custom_suites

    n = 0
    for page in PAGES:
        for m in FENCE.finditer((DOCS / page).read_text()):
            if m.group(1) == "yaml" and "custom_suites" in m.group(3):
                raw = yaml.safe_load(m.group(3))
                raw.setdefault("suites", list(raw["custom_suites"]))
                try:
                    validate(raw)
                finally:
                    forget_custom_suites()
                n += 1
    assert n >= 2


def test_wrapper_appends_tiny_config(tmp_path):
    fake = tmp_path / "real-snakemake"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    fake.chmod(0o755)
    w = tmp_path / "snakemake"
    w.write_text(WRAPPER.format(python=sys.executable, tiny="TINY", real=str(fake)))
    w.chmod(0o755)

    def argv(*args):
        return subprocess.run([str(w), *args], capture_output=True, text=True).stdout.split("\n")[:-1]

    assert argv("--cores", "2") == ["--cores", "2", "--configfile", "TINY"]
    assert argv("--configfile", "a.yaml", "b.yaml", "--cores", "2", "all") == [
        "--configfile",
        "a.yaml",
        "b.yaml",
        "TINY",
        "--cores",
        "2",
        "all",
    ]
    assert argv("--cores", "2", "--configfile", "a.yaml") == ["--cores", "2", "--configfile", "a.yaml", "TINY"]
    assert argv("--help") == ["--help"]

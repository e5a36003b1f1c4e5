"""benchmarks/run_all.py: the per-task loop it times against the batched NPF update computes the
same gradient; a failing section writes nothing; ``--quick --skip-dag`` writes every row with a
positive finite ratio (no timing is asserted)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import run_all  # noqa: E402


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    N, B, in_dim, hidden, out_dim = 3, 8, 5, [16, 12], 2
    x, y = torch.randn(N, B, in_dim), torch.randn(N, B, out_dim)
    learner = run_all.batched_learner(in_dim, hidden, out_dim, N, x, y, torch.device("cpu"))
    return learner, run_all.PerTaskLoop(learner.algo.net, lr=1e-3), x, y


def test_per_task_loop_gradient_equals_batched_npf_gradient(tiny):
    learner, loop, x, y = tiny
    assert learner.reduce == "sum" and learner.algo.loss_scale == x.shape[0]  # Σ_n mean loss_n, as the loop
    assert run_all.gradient_gap(learner, loop, x, y) <= run_all.GRAD_TOL
    # the check can fail: other masks (here none kept in the loop) give other gradients
    loop.masks = [torch.zeros_like(m) for m in loop.masks]
    assert run_all.gradient_gap(learner, loop, x, y) > 1e-3


def test_per_task_loop_update_steps_the_weights(tiny):
    _learner, loop, x, y = tiny
    before = [w.detach().clone() for w in loop.weights]
    loop.update([{"x": x[n], "y": y[n]} for n in range(x.shape[0])])
    assert all(not torch.equal(a, b) for a, b in zip(before, loop.weights))


def test_time_log_parsing(tmp_path):
    log = tmp_path / "time.log"
    log.write_text(
        '\tCommand being timed: "snakemake --cores 2"\n\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:02:03.5\n'
    )
    assert run_all.parse_time_log(log) == pytest.approx(3723.5)
    log.write_text("\tElapsed (wall clock) time (h:mm:ss or m:ss): 12:34.56\n")
    assert run_all.parse_time_log(log) == pytest.approx(754.56)
    log.write_text("no timing here\n")
    with pytest.raises(ValueError, match="Elapsed"):
        run_all.parse_time_log(log)


def test_a_failing_section_fails_the_run_and_writes_nothing(tmp_path, monkeypatch, capsys):
    def boom():
        raise RuntimeError("simulated")

    monkeypatch.setattr(
        run_all,
        "sections",
        lambda device, settings: [
            ("fine", ["x"], lambda: run_all.Row("x", 1.0, "1", "1"), ()),
            ("broken", ["y"], boom, ()),
        ],
    )
    out = tmp_path / "b.md"
    assert run_all.main(["--quick", "--skip-dag", "--threads", "0", "--device", "cpu", "--out", str(out)]) == 1
    assert not out.exists()
    err = capsys.readouterr().err
    assert "section 'broken' FAILED: RuntimeError: simulated" in err and "nothing written" in err


def test_report_names_no_machine_path(tmp_path, monkeypatch):
    full, rerun = tmp_path / "logs" / "full.log", tmp_path / "logs" / "noop.log"
    full.parent.mkdir()
    full.write_text("\tElapsed (wall clock) time (h:mm:ss or m:ss): 10:00.0\n")
    rerun.write_text("\tElapsed (wall clock) time (h:mm:ss or m:ss): 0:06.0\n")
    monkeypatch.setattr(
        run_all, "sections", lambda device, settings: [("fine", ["x"], lambda: run_all.Row("x", 1.0, "1", "1"), ())]
    )
    out = tmp_path / "b.md"
    assert (
        run_all.main(
            ["--quick", "--dag-log", str(full), str(rerun), "--threads", "0", "--device", "cpu", "--out", str(out)]
        )
        == 0
    )
    text = out.read_text()
    assert "0.01 | 6.0 s | 600.0 s" in text and "full.log" in text and "noop.log" in text
    assert str(tmp_path) not in text and "/" + tmp_path.parts[1] not in text


def table_rows(text: str) -> dict[str, str]:
    """measurement label → ratio cell of the report's table."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].isdigit():
            rows[cells[1]] = cells[2]
    return rows


def test_quick_run_reports_every_row(tmp_path):
    out = tmp_path / "b.md"
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "run_all.py"),
            "--quick",
            "--skip-dag",
            "--device",
            "cpu",
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    text = out.read_text()
    for key in ("device: CPU", "torch thread", "date:", "git commit:", f"torch {torch.__version__}", "DAG: skipped"):
        assert key in text, key
    rows = table_rows(text)
    expected = [label for _, labels, _, _ in run_all.sections(torch.device("cpu"), run_all.QUICK) for label in labels]
    roofline = len(run_all.ALGOS) * len(run_all.QUICK["roofline_hidden"]) * len(run_all.ROOFLINE_TASKS) * 2
    fused = [label for label in expected if label.startswith("roofline") and label.endswith(", fused Adam")]
    assert len(fused) == roofline // 2  # each roofline row with and without the fused Adam kernel
    assert len(expected) == 15 + roofline + (len(run_all.PEER_LABELS) if run_all.bench_peers.available() else 0)
    if not run_all.bench_peers.available():
        assert "Stable-Baselines3 rows skipped: stable-baselines3 not installed" in text
    assert sorted(rows) == sorted(expected)
    for label, cell in rows.items():
        ratio = float(cell)
        assert math.isfinite(ratio) and ratio > 0, (label, cell)

"""benchmarks/d3rlpy: the workers' line protocol, the driver's parsing of the replies, its
interleaving of two worker processes and its combination of their rounds into npf ÷ d3rlpy ratios
(no timing is asserted; the d3rlpy venv is not made here)."""

from __future__ import annotations

import io
import json
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks" / "d3rlpy"))

import bench_d3rlpy as bd  # noqa: E402
import protocol  # noqa: E402


def test_serve_times_k_calls_per_command_and_stops_at_quit():
    calls = {"a": 0, "b": 0}
    updates = {k: (lambda k=k: calls.__setitem__(k, calls[k] + 1)) for k in calls}
    out = io.StringIO()
    protocol.serve(updates, {"versions": {"x": "1"}}, io.StringIO("a 3\nb 2\na 1\nquit\nb 5\n"), out)
    lines = [json.loads(s) for s in out.getvalue().splitlines()]
    assert lines[0] == {"ready": True, "versions": {"x": "1"}}
    assert [d["row"] for d in lines[1:]] == ["a", "b", "a"]
    assert all(d["ms"] >= 0 for d in lines[1:])
    assert calls == {"a": 4, "b": 2}  # nothing after quit


@pytest.mark.parametrize("cmd", ["c 3", "a", "a 0", "a x", "a 1 2"])
def test_serve_refuses_a_bad_command_naming_it(cmd):
    with pytest.raises(ValueError, match=repr(cmd)):
        protocol.serve({"a": lambda: None}, {}, io.StringIO(cmd + "\n"), io.StringIO())


def test_time_updates_is_time_per_call():
    ticks = iter([10.0, 10.6])  # 0.6 s for 3 calls
    assert protocol.time_updates(lambda: None, 3, now=lambda: next(ticks)) == pytest.approx(200.0)


def test_rows_named_keeps_order_and_names_unknown_rows():
    assert list(protocol.rows_named(["bcq-10", "iql-256"])) == ["bcq-10", "iql-256"]
    with pytest.raises(ValueError, match="sac-1"):
        protocol.rows_named(["iql-256", "sac-1"])


def test_parse_reply():
    assert bd.parse_reply('{"row": "iql-256", "ms": 12.5}\n', "iql-256", "npf") == 12.5
    for bad in ('{"row": "iql-1024", "ms": 12.5}', '{"row": "iql-256", "ms": 0}', '{"row": "iql-256"}', "oops", "[]"):
        with pytest.raises(ValueError, match="d3rlpy worker answered"):
            bd.parse_reply(bad, "iql-256", "d3rlpy")


def test_combine_takes_medians_and_minima_and_divides_npf_by_d3rlpy():
    rows = protocol.rows_named(["iql-256", "bcq-100"])
    times = {
        "npf": {"iql-256": [12.0, 10.0, 11.0], "bcq-100": [700.0, 720.0, 800.0]},
        "d3rlpy": {"iql-256": [20.0, 24.0, 22.0], "bcq-100": [700.0, 690.0, 760.0]},
    }
    res = bd.combine(times, rows)
    assert [r.label for r in res] == [rows["iql-256"].label, rows["bcq-100"].label]
    assert (res[0].npf, res[0].d3rlpy, res[0].ratio) == ((11.0, 10.0), (22.0, 20.0), 0.5)
    assert res[1].ratio == pytest.approx(720.0 / 700.0)
    assert bd.table(res)[2] == f"| {rows['iql-256'].label} | 11.0 (10.0) | 22.0 (20.0) | 0.50 |"


FAKE_WORKER = """
import sys
sys.path.insert(0, {here!r})
import protocol
out = protocol.claim_stdout()
print("library chatter on stdout")  # must not reach the protocol stream
cost = {cost}
protocol.serve({{r: (lambda r=r: sum(range(cost[r]))) for r in sys.argv[1:]}}, {{"threads": 1}}, sys.stdin, out)
"""


def fake_worker(tmp_path, who, cost):
    script = tmp_path / f"{who}.py"
    script.write_text(textwrap.dedent(FAKE_WORKER.format(here=str(bd.HERE), cost=cost)))
    return bd.Worker(who, [sys.executable, str(script), "iql-256", "bcq-10"])


def test_measure_interleaves_two_worker_processes(tmp_path):
    rows = protocol.rows_named(["iql-256", "bcq-10"])
    workers = {
        "npf": fake_worker(tmp_path, "npf", {"iql-256": 1_000, "bcq-10": 1_000}),
        "d3rlpy": fake_worker(tmp_path, "d3rlpy", {"iql-256": 300_000, "bcq-10": 1_000}),
    }
    try:
        times = bd.measure(workers, rows, rounds=3, warmup=1)
    finally:
        for w in workers.values():
            w.close()
    assert {s: {r: len(v) for r, v in t.items()} for s, t in times.items()} == {
        s: {"iql-256": 3, "bcq-10": 3} for s in ("npf", "d3rlpy")
    }
    assert all(w.proc.returncode == 0 for w in workers.values())
    # 300,000 additions cost more CPU time than 1,000, whatever the load
    assert bd.combine(times, rows)[0].ratio < 1


def test_a_worker_that_dies_is_named(tmp_path):
    script = tmp_path / "dies.py"
    script.write_text("import sys; sys.exit(3)\n")
    with pytest.raises(bd.WorkerError, match=r"d3rlpy worker exited \(code 3\)"):
        bd.Worker("d3rlpy", [sys.executable, str(script)])


def test_missing_venv_is_one_line_and_no_table(tmp_path, capsys):
    assert bd.main(["--venv", str(tmp_path / "nope")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and "no d3rlpy venv at" in err and "nope" in err


def test_unknown_row_is_one_line(capsys):
    assert bd.main(["--rows", "iql-7"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "iql-7" in err

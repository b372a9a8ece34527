"""The benchmark summary: ratios pair runs of the same round, the last attempt of a slot
counts, targets get their verdicts, the Markdown and JSON lines round-trip."""

# ruff: noqa: RUF001 - the report uses typographic symbols

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mio._bench import runner, summary
from mio._bench.common import PRESETS, Totals


def rec(rnd: int, system: str, workload: str, **metrics: Any) -> dict[str, Any]:
    return {
        "type": "run",
        "run_id": "r",
        "round": rnd,
        "attempt": 0,
        "system": system,
        "loop": "asyncio",
        "workload": workload,
        "ok": True,
        **metrics,
    }


def test_ratios_are_paired_inside_each_round() -> None:
    records = [
        rec(0, "mio", "W2", rps=100.0),
        rec(0, "tcp-b", "W2", rps=1000.0),
        rec(1, "mio", "W2", rps=600.0),
        rec(1, "tcp-b", "W2", rps=2000.0),
        rec(2, "mio", "W2", rps=50.0),
        rec(2, "tcp-b", "W2", rps=250.0),
    ]
    (res,) = [
        r
        for r in summary.evaluate(records)
        if r["target"].den == "tcp-b" and r["target"].metric == "rps"
    ]
    assert res["ratios"] == pytest.approx([0.1, 0.3, 0.2])
    assert res["verdict"] == "MISSED"  # median 0.2 < 0.3


def test_last_attempt_of_a_slot_counts_and_failures_are_skipped() -> None:
    records = [
        rec(0, "mio", "W3", rtps=1.0, contaminated=True),
        {**rec(0, "mio", "W3", rtps=10.0), "attempt": 1},
        rec(0, "tcp-a", "W3", rtps=5.0),
        rec(1, "mio", "W3", rtps=10.0),
        {**rec(1, "tcp-a", "W3", rtps=1.0), "ok": False},
    ]
    (res,) = [r for r in summary.evaluate(records) if r["target"].den == "tcp-a"]
    assert res["ratios"] == [2.0]
    assert res["verdict"] == "met"


def test_scaled_down_verdicts_are_indicative() -> None:
    records = [rec(0, "mio", "W2", rps=100.0), rec(0, "tcp-b", "W2", rps=1000.0)]
    (full,) = [r for r in summary.evaluate(records) if r["target"].metric == "rps"]
    (quick,) = [r for r in summary.evaluate(records, full=False) if r["target"].metric == "rps"]
    assert full["verdict"] == "MISSED"
    assert quick["verdict"] == "indicative: missed"


def test_terminal_table_fits_100_columns_and_names_every_verdict() -> None:
    loops = ("asyncio", "uvloop")
    records = []
    for rnd in range(3):
        for loop in loops:
            for system, w, metrics in (
                ("mio", "W1", {"MBps": 1234.5 + rnd}),
                ("tcp-b", "W1", {"MBps": 123456.0}),
                ("mio", "W2", {"rps": 123456.0 + rnd, "cpu_us_per_unit": 20.0}),
                ("tcp-b", "W2", {"rps": 1234567.0, "cpu_us_per_unit": 4.0}),
                ("h2", "W2", {"rps": 1000.0}),
                ("mio", "W4", {"alone_p99_us": 100.0, "bulk_p99_us": 120.0, "p99_ratio": 1.2}),
            ):
                records.append({**rec(rnd, system, w, **metrics), "loop": loop})
    meta = {"run_id": "r", "preset": "full", "python": "3.11", "cpus": 2}
    text = summary.render_terminal(meta, records, 100)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100, text
    assert "indicative" not in text
    (cpu,) = [line for line in lines if "CPU/req" in line]
    assert cpu.split()[-4:] == ["5×", "MISSED", "5×", "MISSED"]  # 20 / 4 > 3 on both loops
    (p99,) = [line for line in lines if "p99 bulk" in line]
    assert p99.split()[-4:] == ["1.2×", "met", "1.2×", "met"]
    assert [m.rsplit(" (", 1)[0] for m in summary.missed(meta, records)] == [
        "W1 mio ÷ raw TCP (b) MB/s ≥ 0.9",
        "W1 mio ÷ raw TCP (b) MB/s ≥ 0.9",
        "W2 mio ÷ raw TCP (b) req/s ≥ 0.3",
        "W2 mio ÷ raw TCP (b) req/s ≥ 0.3",
        "W2 mio ÷ raw TCP (b) CPU/req ≤ 3",
        "W2 mio ÷ raw TCP (b) CPU/req ≤ 3",
    ]
    quick = summary.render_terminal({**meta, "preset": "quick"}, records, 100)
    assert "targets (indicative)" in quick


def test_only_full_runs_repeat_their_workloads() -> None:
    # --quick promises the whole matrix in about a minute, and a warm-up measures nothing:
    # neither may repeat its workloads until 2 s of timed work
    assert PRESETS["full"].min_timed_s == 2.0
    assert PRESETS["quick"].min_timed_s == 0.0
    assert PRESETS["smoke"].min_timed_s == 0.0
    assert runner.WARMUP.min_timed_s == 0.0


def test_repetitions_combine_to_the_median_and_sum_cpu() -> None:
    from mio._bench.worker import combine

    reps = [
        {
            "ok": True,
            "rps": v,
            "requests": 100,
            "elapsed_s": 0.5,
            "cpu_client_s": 0.1,
            "cpu_server_s": 0.2,
        }
        for v in (300.0, 100.0, 200.0, 400.0)
    ]
    out = combine("W2", reps)
    assert out["rps"] == 200.0  # the worse of the two middle values of 4
    assert out["reps"] == 4
    assert out["rep_values"] == [300.0, 100.0, 200.0, 400.0]
    assert out["cpu_us_per_unit"] == pytest.approx(1.2 * 1e6 / 400)
    assert out["cpu_client_pct"] == pytest.approx(20.0)
    assert out["cpu_server_pct"] == pytest.approx(40.0)
    assert out["elapsed_s"] == pytest.approx(2.0)
    assert out["cpu_client_s"] == pytest.approx(0.4)
    assert out["cpu_server_s"] == pytest.approx(0.8)
    # lower is better (W4's p99 ratio): the worse middle value is the higher one
    w4 = combine("W4", [{"ok": True, "p99_ratio": v, "elapsed_s": 0.5} for v in (1, 4, 2, 3)])
    assert w4["p99_ratio"] == 3
    # foreign load in any repetition shows in the run (time-weighted), and a run of short
    # repetitions is judged on its whole timed work
    short = [
        {"ok": True, "rps": 1.0, "requests": 1, "elapsed_s": 0.15, "foreign_proc_pct": p}
        for p in (90.0, 1.0) * 7
    ]
    busy = combine("W2", short)
    assert busy["foreign_proc_pct"] == pytest.approx(45.5)
    assert runner._contaminated(busy)
    failed = combine("W2", [*reps[:2], {"ok": False, "error": "boom"}])
    assert not failed["ok"]
    assert failed["error"] == "repetition 3: boom"


def test_w4_target_uses_one_record() -> None:
    records = [rec(0, "mio", "W4", alone_p99_us=100.0, bulk_p99_us=500.0)]
    (res,) = summary.evaluate(records)
    assert res["ratios"] == [5.0]
    assert res["verdict"] == "MISSED"


def test_render_and_load_round_trip(tmp_path: Path) -> None:
    meta = {
        "type": "meta",
        "run_id": "r",
        "preset": "quick",
        "totals": PRESETS["quick"].as_dict(),
        "notes": ["system h2 skipped: test"],
    }
    records = [
        rec(0, "mio", "W1", MBps=900.0, cpu_client_pct=80.0, cpu_server_pct=90.0),
        rec(0, "tcp-b", "W1", MBps=1000.0),
    ]
    path = tmp_path / "r.jsonl"
    path.write_text(
        "".join(json.dumps(r) + "\n" for r in [{"type": "meta", "run_id": "old"}, meta, *records])
    )
    loaded_meta, loaded = summary.load(path)
    assert loaded_meta["preset"] == "quick"
    assert loaded == records
    text = summary.render(loaded_meta, loaded)
    assert (
        "| W1 bulk MB/s: mio ≥ 0.90× raw TCP (BufferedProtocol sink) | asyncio | 0.9 | 0.9× | "
        ">= 0.9 | indicative: met |" in text
    )
    assert "| mio | asyncio | 900 | n/a | 80/90 | 1/1 |" in text
    assert "system h2 skipped: test" in text
    assert "Scaled-down totals" in text


def test_plan_interleaves_and_rotates() -> None:
    settings = runner.Settings(
        systems=["mio", "tcp-a", "tcp-b"],
        workloads=["W1", "W2"],
        loops=["asyncio"],
        rounds=2,
        totals=Totals(),
    )
    plan, notes = runner.make_plan(settings)
    assert not notes
    assert [(p.round, p.workload, p.system) for p in plan] == [
        (0, "W1", "mio"),
        (0, "W1", "tcp-b"),
        (0, "W2", "mio"),
        (0, "W2", "tcp-a"),
        (0, "W2", "tcp-b"),
        (1, "W1", "tcp-b"),
        (1, "W1", "mio"),
        (1, "W2", "tcp-a"),
        (1, "W2", "tcp-b"),
        (1, "W2", "mio"),
    ]


def test_parse_opt() -> None:
    assert runner.parse_opt(["mio.initial_window=1M", "quic.quic-no-pacing=1"]) == {
        "mio": {"initial_window": "1M"},
        "quic": {"quic_no_pacing": "1"},
    }
    with pytest.raises(ValueError, match="FAMILY"):
        runner.parse_opt(["window=1"])


def test_missing_dependencies_skip_a_system_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    from mio._bench import systems

    fake = systems.System(
        "fake", "fake", "bench_tcp", "pipe", ("W1",), requires=("no_such_module_for_mio_bench",)
    )
    monkeypatch.setitem(systems.SYSTEMS, "fake", fake)
    settings = runner.Settings(
        systems=["fake", "tcp-b"], workloads=["W1"], loops=["asyncio"], rounds=1
    )
    plan, notes = runner.make_plan(settings)
    assert [p.system for p in plan] == ["tcp-b"]
    assert notes == [
        "system fake skipped: module 'no_such_module_for_mio_bench' is not "
        "installed (pip install 'mio-mux[bench]')"
    ]

"""benchmarks/tunnel_vs_ssh.py's report: ratios to ``ssh -R`` and the direct-TCP ceiling
(what docs/TUNNEL.md's verdicts rest on). The measurements themselves need sshd and iperf3
and are not run here."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "tunnel_vs_ssh.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tunnel_vs_ssh", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row(system: str, a: float, b8: float, b100: float, c: float) -> dict[str, Any]:
    return {
        "system": system,
        "a_MBps": a,
        "b8_MBps": b8,
        "b100_MBps": b100,
        "c_conn_per_s": c,
        "c_tunnel_cpu_us_per_conn": None,
        "c_harness_cpu_us_per_conn": 500.0,
        "d_KiB_per_conn": None,
    }


def test_ceiling_is_direct_over_ssh_per_figure(bench: ModuleType) -> None:
    rows = [
        row("direct TCP", 1600.0, 1700.0, 3400.0, 2000.0),
        row("ssh -R", 320.0, 340.0, 100.0, 1000.0),
        row("mio tunnel TLS", 400.0, 400.0, 300.0, 900.0),
    ]
    limits = bench.ceilings(rows)
    assert limits == {
        "a_MBps": pytest.approx(5.0),
        "b8_MBps": pytest.approx(5.0),
        "b100_MBps": pytest.approx(34.0),
        "c_conn_per_s": pytest.approx(2.0),
    }
    text = bench.ratios(rows)
    assert "- mio tunnel TLS ÷ ssh -R: (a) 1 conn 1.25x, (b) 8 conns 1.18x" in text
    assert "(c) conn/s 0.90x" in text
    assert "no tunnel can beat it): (a) 1 conn 5.00x" in text
    assert text.endswith("(c) conn/s 2.00x")
    assert "direct TCP ÷" not in text.split("ceiling")[0]  # direct is no tunnel row


def test_no_ceiling_without_both_reference_rows(bench: ModuleType) -> None:
    tunnel = row("mio tunnel TLS", 400.0, 400.0, 300.0, 900.0)
    assert bench.ceilings([row("ssh -R", 1, 1, 1, 1), tunnel]) == {}
    assert bench.ceilings([row("direct TCP", 1, 1, 1, 1), tunnel]) == {}
    assert bench.ratios([row("direct TCP", 1, 1, 1, 1), tunnel]) == ""


def test_table_has_the_client_cpu_column(bench: ModuleType) -> None:
    text = bench.table([row("direct TCP", 1600.0, 1700.0, 3400.0, 2000.0)])
    header, rule, line = text.splitlines()
    assert "(c) client CPU µs/conn" in header
    assert header.count("|") == rule.count("|") == line.count("|")
    assert "| 2,000 | - | 500 | - |" in line

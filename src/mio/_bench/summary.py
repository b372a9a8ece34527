"""Markdown summary of a benchmark run: per-workload tables and the target ratios.

Every cell is the median (min–max) over rounds. Ratios are computed pair by pair inside each
round (both runs of a pair come from the same round, adjacent in time), then summarised.
"""

# ruff: noqa: RUF001, RUF002 - the report uses typographic symbols (times, en dash)

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import statistics
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .common import Totals
from .systems import SYSTEMS
from .workloads import WORKLOADS

__all__ = (
    "TARGETS",
    "Target",
    "load",
    "render",
    "render_short",
    "render_terminal",
    "missed",
    "update_readme",
    "main",
    "evaluate",
)

Rec = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Target:
    """A goal on the ratio of two numbers measured in the same round."""

    workload: str
    num: str  # system
    metric: str
    den: str | None  # system; None: ``den_metric`` of the same record
    den_metric: str
    op: str  # ">=" or "<="
    bound: float
    text: str

    def met(self, ratio: float) -> bool:
        return ratio >= self.bound if self.op == ">=" else ratio <= self.bound


TARGETS: tuple[Target, ...] = (
    Target(
        "W1",
        "mio",
        "MBps",
        "tcp-b",
        "MBps",
        ">=",
        0.90,
        "W1 bulk MB/s: mio ≥ 0.90× raw TCP (BufferedProtocol sink)",
    ),
    Target(
        "W2",
        "mio",
        "rps",
        "tcp-b",
        "rps",
        ">=",
        0.30,
        "W2 req/s: mio ≥ 0.30× raw TCP (b) pipelined",
    ),
    Target("W2", "mio", "rps", "h2", "rps", ">=", 15.0, "W2 req/s: mio ≥ 15× h2"),
    Target(
        "W3",
        "mio",
        "rtps",
        "tcp-b",
        "rtps",
        ">=",
        0.50,
        "W3 round trips/s: mio ≥ 0.50× raw TCP (b) pipelined",
    ),
    Target(
        "W3",
        "mio",
        "rtps",
        "tcp-a",
        "rtps",
        ">=",
        2.0,
        "W3 round trips/s: mio ≥ 2× raw TCP (a) 1000 connections",
    ),
    Target(
        "W4",
        "mio",
        "bulk_p99_us",
        None,
        "alone_p99_us",
        "<=",
        1.5,
        "W4 p99 with bulk ≤ 1.5× p99 without (mio)",
    ),
    Target(
        "W2",
        "mio",
        "rps",
        "mio-pure",
        "rps",
        "<=",
        2.0,
        "W2 req/s: mio-pure within 2× of compiled (mio ÷ mio-pure ≤ 2)",
    ),
    Target(
        "W3",
        "mio",
        "rtps",
        "mio-pure",
        "rtps",
        "<=",
        2.0,
        "W3 round trips/s: mio-pure within 2× of compiled (mio ÷ mio-pure ≤ 2)",
    ),
    Target(
        "W2",
        "mio",
        "cpu_us_per_unit",
        "tcp-b",
        "cpu_us_per_unit",
        "<=",
        3.0,
        "W2 CPU µs per request (client + server): mio ≤ 3× raw TCP (b)",
    ),
)

COLUMNS: dict[str, list[tuple[str, str, int]]] = {
    "W1": [("MBps", "MB/s", 0), ("cpu_us_per_unit", "CPU µs/MB", 0)],
    "W2": [
        ("rps", "req/s", 0),
        ("p50_us", "p50 µs", 0),
        ("p99_us", "p99 µs", 0),
        ("cpu_us_per_unit", "CPU µs/req", 1),
    ],
    "W3": [
        ("total_s", "total s", 2),
        ("rtps", "round trips/s", 0),
        ("cpu_us_per_unit", "CPU µs/rt", 1),
    ],
    "W4": [
        ("alone_p99_us", "p99 alone µs", 0),
        ("bulk_p99_us", "p99 with bulk µs", 0),
        ("p99_ratio", "ratio", 2),
        ("bulk_MBps", "bulk MB/s meanwhile", 0),
    ],
}
UNITS = {"MBps": "MB/s", "rps": "req/s", "rtps": "rt/s", "p99_ratio": "×"}


# ---------------------------------------------------------------------------- loading
def load(path: Path, run_id: str | None = None) -> tuple[Rec, list[Rec]]:
    """The meta record and run records of run ``run_id`` (default: the last run in the file)."""
    metas: dict[str, Rec] = {}
    runs: dict[str, list[Rec]] = collections.defaultdict(list)
    order: list[str] = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            rec = json.loads(line)
            rid = rec.get("run_id", "")
            if rid not in order:
                order.append(rid)
            if rec.get("type") == "meta":
                metas[rid] = rec
            elif rec.get("type") == "end":
                end = {k: rec[k] for k in ("wall_s", "startup_s", "notes") if k in rec}
                metas.setdefault(rid, {}).update(end)
            else:
                runs[rid].append(rec)
    if not order:
        raise ValueError(f"{path}: no records")
    rid = run_id if run_id is not None else order[-1]
    if rid not in order:
        raise ValueError(f"{path}: no run {rid!r} (runs: {', '.join(order)})")
    return metas.get(rid, {"run_id": rid}), runs[rid]


def final_records(records: Iterable[Rec]) -> list[Rec]:
    """One record per slot (round, system, loop, workload): its last attempt."""
    slots: dict[tuple[Any, ...], Rec] = {}
    for r in records:
        if r.get("type", "run") != "run":
            continue
        key = (r.get("round"), r["system"], r["loop"], r["workload"])
        if key not in slots or r.get("attempt", 0) >= slots[key].get("attempt", 0):
            slots[key] = r
    return list(slots.values())


# ---------------------------------------------------------------------------- formatting
def _med(vals: Sequence[float]) -> float:
    return float(statistics.median(vals))


def _num(v: float, nd: int) -> str:
    if nd == 0 and abs(v) < 10:
        nd = 1
    return f"{v:,.{nd}f}"


def fmt(vals: Sequence[float], nd: int = 0) -> str:
    vals = [v for v in vals if v is not None]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return _num(vals[0], nd)
    return f"{_num(_med(vals), nd)} ({_num(min(vals), nd)}–{_num(max(vals), nd)})"


def fmt_ratio(vals: Sequence[float]) -> str:
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.3g}×"
    return f"{_med(vals):.3g}× ({min(vals):.3g}–{max(vals):.3g})"


class Index:
    def __init__(self, records: Iterable[Rec]) -> None:
        self.records = final_records(records)
        self.by_slot: dict[tuple[str, str, str], dict[int, Rec]] = collections.defaultdict(dict)
        for r in self.records:
            self.by_slot[(r["workload"], r["system"], r["loop"])][r.get("round", 0)] = r

    def ok(self, workload: str, system: str, loop: str) -> list[Rec]:
        recs = self.by_slot.get((workload, system, loop), {})
        return [recs[k] for k in sorted(recs) if recs[k].get("ok")]

    def count(self, workload: str, system: str, loop: str) -> tuple[int, int]:
        recs = self.by_slot.get((workload, system, loop), {})
        return sum(1 for r in recs.values() if r.get("ok")), len(recs)

    def values(self, workload: str, system: str, loop: str, key: str) -> list[float]:
        return [r[key] for r in self.ok(workload, system, loop) if r.get(key) is not None]

    def per_round(self, workload: str, system: str, loop: str, key: str) -> dict[int, float]:
        recs = self.by_slot.get((workload, system, loop), {})
        return {rnd: r[key] for rnd, r in recs.items() if r.get("ok") and r.get(key) is not None}


def round_ratios(
    index: Index, workload: str, loop: str, num: str, key: str, den: str | None, den_key: str
) -> list[float]:
    a = index.per_round(workload, num, loop, key)
    b = index.per_round(workload, den if den is not None else num, loop, den_key)
    return [a[k] / b[k] for k in sorted(a) if b.get(k)]


def evaluate(records: Iterable[Rec], *, full: bool = True) -> list[dict[str, Any]]:
    """Every target on every loop: per-round ratios, median, verdict (``met``, ``MISSED``,
    ``n/a``; prefixed ``indicative:`` when ``full`` is false, i.e. for scaled-down sizes)."""
    index = Index(records)
    loops = sorted({r["loop"] for r in index.records}, key=["asyncio", "uvloop"].index)
    out = []
    for t in TARGETS:
        for loop in loops:
            ratios = round_ratios(index, t.workload, loop, t.num, t.metric, t.den, t.den_metric)
            have = (t.workload, t.num, loop) in index.by_slot and (
                t.den is None or (t.workload, t.den, loop) in index.by_slot
            )
            if not have:
                continue
            verdict = "n/a"
            if ratios:
                verdict = "met" if t.met(_med(ratios)) else "MISSED"
                if not full:
                    verdict = "indicative: " + verdict.lower()
            out.append({"target": t, "loop": loop, "ratios": ratios, "verdict": verdict})
    return out


def _cpu(index: Index, w: str, s: str, loop: str) -> str:
    c = index.values(w, s, loop, "cpu_client_pct")
    v = index.values(w, s, loop, "cpu_server_pct")
    if not c:
        return "n/a"
    return f"{_med(c):.0f}/{_med(v):.0f}" if v else f"{_med(c):.0f}/?"


def render(meta: Rec, records: Sequence[Rec]) -> str:
    """The Markdown report."""
    index = Index(records)
    systems = [s for s in SYSTEMS if any(r["system"] == s for r in index.records)]
    loops = [lp for lp in ("asyncio", "uvloop") if any(r["loop"] == lp for r in index.records)]
    workloads = [w for w in WORKLOADS if any(r["workload"] == w for r in index.records)]
    totals = meta.get("totals") or {}
    preset = meta.get("preset", "?")
    lines: list[str] = []
    P = lines.append
    P("# mio end-to-end benchmark")
    P("")
    rounds = max((r.get("round", 0) for r in index.records), default=-1) + 1
    P(
        f"Run `{meta.get('run_id', '?')}` ({meta.get('ts', '?')}): preset **{preset}**, "
        f"{rounds} round(s); Python {meta.get('python', '?')} "
        f"({meta.get('implementation', '?')}), {meta.get('cpus', '?')} CPUs, "
        f"mio {meta.get('mio', '?')}, load average at start {meta.get('loadavg1', '?')}."
    )
    if preset != "full":
        P("")
        P(
            "> **Scaled-down totals**: numbers for orientation only (start-up effects weigh "
            "more), so the verdicts are *indicative*: the targets refer to the full sizes "
            "(`mio bench` without `--quick`)."
        )
    if meta.get("verify"):
        P("")
        P("Bulk content verified with CRC-32 (`--verify-content`).")
    if totals:
        t = Totals(**totals)
        P("")
        P("Workloads: " + "; ".join(f"{w.name} {w.describe(t)}" for w in WORKLOADS.values()))
    P("")
    P(
        "Client and server are separate processes on 127.0.0.1. Cells: median (min–max) over "
        "rounds (each run repeats its workload until 2 s of timed work and reports the median "
        "repetition); CPU % = client/server % of one core during the timed region, CPU µs per "
        "unit = client + server CPU (`time.process_time()` in each process) ÷ units of work; "
        "ok = runs that passed their data checks."
    )

    # -- targets
    results = evaluate(records, full=preset == "full")
    if results:
        P("")
        P("## Targets (ratios pair by pair inside each round)")
        P("")
        P("| target | loop | ratio per round | median (min–max) | goal | verdict |")
        P("|---|---|---|---|---|---|")
        for res in results:
            target: Target = res["target"]
            per = ", ".join(f"{x:.3g}" for x in res["ratios"]) or "n/a"
            P(
                f"| {target.text} | {res['loop']} | {per} | {fmt_ratio(res['ratios'])} | "
                f"{target.op} {target.bound:g} | {res['verdict']} |"
            )

    # -- per workload tables
    for w in workloads:
        wl = WORKLOADS[w]
        cols = COLUMNS[w]
        P("")
        P(f"## {w} {wl.title}" + (f": {wl.describe(Totals(**totals))}" if totals else ""))
        P("")
        P("| system | loop | " + " | ".join(c[1] for c in cols) + " | CPU % | ok |")
        P("|---|---|" + "---|" * len(cols) + "---|---|")
        for s in systems:
            if w not in SYSTEMS[s].workloads:
                continue
            for loop in loops:
                ok, n = index.count(w, s, loop)
                if not n:
                    continue
                cells = [fmt(index.values(w, s, loop, key), nd) for key, _, nd in cols]
                okc = f"{ok}/{n}" if ok == n else f"**{ok}/{n}**"
                P(
                    f"| {SYSTEMS[s].label} | {loop} | "
                    + " | ".join(cells)
                    + f" | {_cpu(index, w, s, loop)} | {okc} |"
                )

    # -- mio against everything else
    if "mio" in systems and len(systems) > 1:
        P("")
        P("## mio ÷ each system (pair by pair inside each round, median (min–max))")
        P("")
        keys = {w: WORKLOADS[w].key for w in workloads if w != "W4"}
        P(
            "| system | loop | "
            + " | ".join(f"{w} {UNITS.get(k, k)}" for w, k in keys.items())
            + " |"
        )
        P("|---|---|" + "---|" * len(keys))
        for s in systems:
            if s == "mio":
                continue
            for loop in loops:
                cells = [
                    fmt_ratio(round_ratios(index, w, loop, "mio", k, s, k)) for w, k in keys.items()
                ]
                P(f"| {SYSTEMS[s].label} | {loop} | " + " | ".join(cells) + " |")
        if len(loops) == 2:
            P("")
            P(
                "uvloop ÷ asyncio, same system and round: "
                + "; ".join(
                    f"{SYSTEMS[s].label} "
                    + ", ".join(
                        f"{w} {fmt_ratio(_loop_ratios(index, w, s, k))}"
                        for w, k in keys.items()
                        if w in SYSTEMS[s].workloads
                    )
                    for s in systems
                )
                + "."
            )

    # -- notes
    notes = list(meta.get("notes") or [])
    fails = [r for r in index.records if not r.get("ok")]
    dirty = [r for r in index.records if r.get("contaminated")]
    neighbours = [
        r["foreign_proc_pct"]
        for r in index.records
        if r.get("foreign_proc_pct") is not None and (r.get("elapsed_s") or 0) >= 0.2
    ]
    P("")
    P("## Notes")
    P("")
    for note in notes:
        P(f"- {note}")
    P(f"- Failed runs: {len(fails)}.")
    for r in fails:
        P(
            f"  - round {r.get('round', 0) + 1} {r['workload']} {r['system']}/{r['loop']}: "
            f"{r.get('error')}"
        )
    listed = ", ".join(
        f"{r['workload']} {r['system']}/{r['loop']} r{r.get('round', 0) + 1}"
        f" ({r.get('foreign_proc_pct')}%)"
        for r in dirty[:12]
    )
    P(
        f"- Runs during which other processes used more than 10% of a core, kept after "
        f"{meta.get('attempts', 1)} attempt(s): {len(dirty)}"
        + (
            f": {listed}" + (f" and {len(dirty) - 12} more" if len(dirty) > 12 else "")
            if dirty
            else ""
        )
        + ". (Runs shorter than 0.2 s cannot be judged: other processes' CPU times tick in "
        "10 ms steps.)"
    )
    if neighbours:
        P(
            f"- CPU of other processes during runs of 0.2 s or more: median "
            f"{_med(neighbours):.0f}%, max {max(neighbours):.0f}% of one core "
            f"(this machine has {meta.get('cpus', '?')} CPUs)."
        )
    if meta.get("wall_s") is not None:
        P(
            f"- Wall time {meta['wall_s']:.0f} s (start-up and warm-up "
            f"{meta.get('startup_s', 0):.0f} s)."
        )
    if meta.get("opts"):
        P(f"- System options: `{json.dumps(meta['opts'])}`.")
    return "\n".join(lines) + "\n"


def short_text(t: Target) -> str:
    """A target in at most 40 columns: ``W2 mio ÷ raw TCP (b) req/s ≥ 0.3``."""
    unit = {"cpu_us_per_unit": "CPU/req"}.get(t.metric, UNITS.get(t.metric, t.metric))
    op = "≥" if t.op == ">=" else "≤"
    if t.den is None:
        return f"{t.workload} {SYSTEMS[t.num].label} p99 bulk ÷ alone {op} {t.bound:g}"
    return f"{t.workload} {SYSTEMS[t.num].label} ÷ {SYSTEMS[t.den].label} {unit} {op} {t.bound:g}"


def render_terminal(meta: Rec, records: Sequence[Rec], width: int = 100) -> str:
    """A plain-text report for a terminal, at most ``width`` columns: per workload the median
    (min–max) of every system on each loop, then every target's ratio and verdict."""
    index = Index(records)
    systems = [s for s in SYSTEMS if any(r["system"] == s for r in index.records)]
    loops = [lp for lp in ("asyncio", "uvloop") if any(r["loop"] == lp for r in index.records)]
    workloads = [w for w in WORKLOADS if any(r["workload"] == w for r in index.records)]
    preset = meta.get("preset", "?")
    full = preset == "full"
    rounds = max((r.get("round", 0) for r in index.records), default=-1) + 1
    label_w = 40
    cell_w = max(16, min(28, (width - label_w) // max(len(loops), 1)))

    def row(label: str, cells: Sequence[str]) -> str:
        line = f"{label:<{label_w}}" + "".join(f"{c:>{cell_w}}" for c in cells)
        return line[:width].rstrip()

    lines = [
        f"run {meta.get('run_id', '?')}: preset {preset}, {rounds} round(s), Python "
        f"{meta.get('python', '?')}, {meta.get('cpus', '?')} CPUs; median (min–max)"[:width]
    ]
    if not full:
        lines.append("scaled-down sizes: numbers for orientation, verdicts indicative")
    for w in workloads:
        wl = WORKLOADS[w]
        key = wl.key
        unit = UNITS.get(key, key)
        better = "higher" if wl.higher_is_better else "lower"
        lines += ["", row(f"{w} {wl.title} ({unit}, {better} is better)", loops)]
        for s in systems:
            if w not in SYSTEMS[s].workloads:
                continue
            cells = []
            for loop in loops:
                vals = index.values(w, s, loop, key)
                ok, n = index.count(w, s, loop)
                cell = fmt(vals, 2 if key == "p99_ratio" else 0) if vals else "–"
                if n and ok < n:
                    cell += f" [{n - ok} failed]"
                if len(cell) > cell_w - 1:
                    cell = cell.split(" ")[0]
                cells.append(cell)
            lines.append(row(f"  {SYSTEMS[s].label}", cells))
    results = evaluate(records, full=full)
    if results:
        head = "targets" + (" (indicative)" if not full else "")
        lines += ["", row(head, loops)]
        by_target: dict[Target, dict[str, dict[str, Any]]] = {}
        for res in results:
            by_target.setdefault(res["target"], {})[res["loop"]] = res
        for t, per_loop in by_target.items():
            cells = []
            for loop in loops:
                got = per_loop.get(loop)
                if got is None or not got["ratios"]:
                    cells.append("n/a")
                    continue
                verdict = got["verdict"].replace("indicative: ", "")
                cells.append(f"{_med(got['ratios']):.3g}× {verdict}")
            lines.append(row(f"  {short_text(t)}", cells))
    failed = [r for r in index.records if not r.get("ok")]
    if failed:
        lines += ["", f"{len(failed)} run(s) failed their checks (details: --markdown)"]
    return "\n".join(lines) + "\n"


def missed(meta: Rec, records: Sequence[Rec]) -> list[str]:
    """The targets (``short_text`` and loop) a run missed or could not measure."""
    return [
        f"{short_text(res['target'])} ({res['loop']}): {res['verdict']}"
        for res in evaluate(records, full=meta.get("preset") == "full")
        if res["verdict"] != "met"
    ]


def _loop_ratios(index: Index, w: str, s: str, key: str) -> list[float]:
    a = index.per_round(w, s, "uvloop", key)
    b = index.per_round(w, s, "asyncio", key)
    return [a[k] / b[k] for k in sorted(a) if b.get(k)]


README_START = "<!-- bench:start (generated by benchmarks/e2e/summarize.py --readme) -->"
README_END = "<!-- bench:end -->"


def render_short(meta: Rec, records: Sequence[Rec]) -> str:
    """The README's short table: medians on both loops, and every target's verdict on each."""
    index = Index(records)
    systems = [s for s in SYSTEMS if any(r["system"] == s for r in index.records)]
    loops = [lp for lp in ("asyncio", "uvloop") if any(r["loop"] == lp for r in index.records)]
    rows = [
        ("W1 bulk, MB/s", "W1", "MBps"),
        ("W2 rpc, req/s", "W2", "rps"),
        ("W3 1000 streams, round trips/s", "W3", "rtps"),
    ]
    labels = [SYSTEMS[s].label for s in systems]
    rounds = max((r.get("round", 0) for r in index.records), default=-1) + 1
    full = meta.get("preset") == "full"
    lines = [
        f"Run `{meta.get('run_id', '?')}`, preset {meta.get('preset', '?')}, {rounds} rounds, "
        f"{' and '.join(loops)}, Python {meta.get('python', '?')}, {meta.get('cpus', '?')} "
        "CPUs; medians, client and server in separate processes on 127.0.0.1.",
        "",
        "| workload | loop | " + " | ".join(labels) + " |",
        "|---|---|" + "---:|" * len(labels),
    ]
    for title, w, key in rows:
        for loop in loops:
            cells = []
            for sname in systems:
                vals = index.values(w, sname, loop, key)
                cells.append(fmt(vals, 0).split(" ")[0] if vals else "–")
            lines.append(f"| {title} | {loop} | " + " | ".join(cells) + " |")
    for loop in loops:
        p99 = index.values("W4", "mio", loop, "p99_ratio")
        if p99:
            lines.append("")
            lines.append(
                f"W4 fairness (mio, {loop}): p99 of W2 at 8 workers beside a bulk stream = "
                f"{_med(p99):.2f}× its p99 alone."
            )
    results = evaluate(records, full=full)
    if results:
        by_target: dict[Target, dict[str, dict[str, Any]]] = {}
        for res in results:
            by_target.setdefault(res["target"], {})[res["loop"]] = res
        lines += [
            "",
            "| target | " + " | ".join(f"{loop}: median ratio, verdict" for loop in loops) + " |",
            "|---|" + "---|" * len(loops),
        ]
        for t, per_loop in by_target.items():
            cells = []
            for loop in loops:
                got = per_loop.get(loop)
                if got is None:
                    cells.append("–")
                    continue
                verdict = got["verdict"]
                if verdict == "MISSED":
                    verdict = "**MISSED**"
                ratio = f"{_med(got['ratios']):.3g}× " if got["ratios"] else ""
                cells.append(f"{ratio}{verdict}")
            lines.append(f"| {t.text} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def update_readme(readme: Path, short: str) -> None:
    """Replace the text between the README's bench markers with ``short``."""
    text = readme.read_text()
    start = text.index(README_START) + len(README_START)
    end = text.index(README_END)
    readme.write_text(text[:start] + "\n" + short + "\n" + text[end:])


def main(argv: Sequence[str] | None = None, results_dir: Path | None = None) -> int:
    """``benchmarks/e2e/summarize.py``: re-render RESULTS.md (and the plot) from JSON lines."""
    from . import plot

    results_dir = results_dir or Path("benchmarks/results")
    ap = argparse.ArgumentParser(prog="summarize.py", description=__doc__)
    ap.add_argument("jsonl", type=Path, nargs="?", default=results_dir / "results.jsonl")
    ap.add_argument("--run-id", default=None, help="run to summarise (default: the last one)")
    ap.add_argument("--md", type=Path, default=results_dir / "RESULTS.md")
    ap.add_argument("--png", type=Path, default=results_dir / "results.png")
    ap.add_argument(
        "--readme",
        type=Path,
        default=None,
        help="also rewrite the short table between the bench markers of this README",
    )
    args = ap.parse_args(argv)
    meta, records = load(args.jsonl, args.run_id)
    text = render(meta, records)
    args.md.write_text(text)
    if args.readme is not None:
        update_readme(args.readme, render_short(meta, records))
    print(text)
    note = plot.plot(meta, records, args.png)
    if note:
        print(f"no plot: {note}", file=sys.stderr)
    return 0

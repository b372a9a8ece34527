"""Plan the rounds, drive one server and one client process per system and event loop, write
JSON lines.

Interleaving: every round runs every (workload, loop, system) once, in the order workload →
loop → system, with the system order rotated from round to round. The runs a target ratio
compares (say mio and raw TCP (b) on W2 with uvloop) are therefore adjacent in time and
always taken from the same round, so a slow patch of a shared machine hits both sides of a
ratio rather than one.

The worker processes are started once (in parallel) and reused for every round; each run
gets fresh connections and a fresh event loop in the client process. A run that fails or
times out gets its worker pair restarted.
"""

# ruff: noqa: RUF001 - progress lines use the multiplication sign

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from . import common as C
from .systems import SYSTEMS, System, missing
from .workloads import WORKLOADS

__all__ = ("Settings", "PlanItem", "BenchResult", "run_bench", "main", "Progress")

#: ``--opt`` prefixes and the systems they apply to
OPT_FAMILIES = {
    "mio": ("mio", "mio-cb", "mio-pure", "mio-quic"),
    "tcp": ("tcp-a", "tcp-b", "tcp-task"),
    "h2": ("h2",),
    "quic": ("quic",),
}
#: warm-up totals: every code path once, before round 0 (not recorded)
WARMUP = C.Totals(
    bulk_bytes=256 * 1024,
    rpc_requests=64,
    rpc_workers=8,
    echo_streams=16,
    echo_roundtrips=2,
    fair_requests=32,
    min_timed_s=0.0,  # once: a warm-up is not measured
    timeout=15.0,
)
FOREIGN_MAX = 20.0  # % of one core used by other processes during a run >= 1 s
FOREIGN_PROC_MAX = 10.0


@dataclasses.dataclass
class Settings:
    """What to run."""

    systems: list[str] = dataclasses.field(default_factory=lambda: list(SYSTEMS))
    workloads: list[str] = dataclasses.field(default_factory=lambda: list(WORKLOADS))
    loops: list[str] = dataclasses.field(default_factory=lambda: list(C.LOOPS))
    rounds: int = 5
    preset: str = "full"
    totals: C.Totals = dataclasses.field(default_factory=C.Totals)
    verify: bool = False
    #: per system family (``mio``, ``tcp``, ``h2``, ``quic``): option name → value
    opts: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    #: before each run, wait (up to 10 s) until the machine is less busy than this (% of a core)
    gate: float | None = None
    #: runs of one slot while other processes used the CPU during it (``contaminated``)
    attempts: int = 1
    warmup: bool = True
    out: Path | None = None  # JSON lines, appended
    argv: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class PlanItem:
    round: int
    workload: str
    loop: str
    system: str

    @property
    def label(self) -> str:
        return f"round {self.round + 1} {self.workload} {self.system}/{self.loop}"


@dataclasses.dataclass
class BenchResult:
    meta: dict[str, Any]
    records: list[dict[str, Any]]
    interrupted: bool = False

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if not r.get("ok")]


ProgressFn = Callable[[int, int, PlanItem, "dict[str, Any] | None"], None]


def system_opts(settings: Settings, system: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for family, members in OPT_FAMILIES.items():
        if system in members:
            out.update(settings.opts.get(family, {}))
    return out


def parse_opt(values: Sequence[str]) -> dict[str, dict[str, str]]:
    """``["mio.initial_window=1048576", ...]`` → ``{"mio": {"initial_window": "1048576"}}``."""
    out: dict[str, dict[str, str]] = {}
    for item in values:
        key, sep, value = item.partition("=")
        family, dot, name = key.partition(".")
        if not sep or not dot or family not in OPT_FAMILIES or not name:
            raise ValueError(
                f"--opt {item!r}: expected FAMILY.NAME=VALUE with FAMILY one of "
                f"{', '.join(OPT_FAMILIES)} (e.g. mio.initial_window=1048576)"
            )
        out.setdefault(family, {})[name.replace("-", "_")] = value
    return out


def make_plan(settings: Settings) -> tuple[list[PlanItem], list[str]]:
    """The runs in execution order, and notes about what is skipped."""
    notes: list[str] = []
    systems: list[System] = []
    for name in settings.systems:
        system = SYSTEMS[name]
        why = missing(system)
        if why:
            notes.append(f"system {name} skipped: {why}")
        else:
            systems.append(system)
    loops = []
    for loop in settings.loops:
        why = C.loop_available(loop)
        if why:
            notes.append(f"loop {loop} skipped: {why}")
        else:
            loops.append(loop)
    plan = []
    for rnd in range(settings.rounds):
        shift = rnd % len(systems) if systems else 0
        order = systems[shift:] + systems[:shift]
        for workload in settings.workloads:
            for loop in loops:
                for system in order:
                    if workload in system.workloads:
                        plan.append(PlanItem(rnd, workload, loop, system.name))
    return plan, notes


# ---------------------------------------------------------------------------- worker processes
class _Proc:
    """A child process whose stdout lines are collected by a thread."""

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
            text=True,
            bufsize=1,
            start_new_session=True,  # Ctrl-C goes to the runner only
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def expect(self, prefix: str, timeout: float) -> str:
        """The rest of the next stdout line starting with ``prefix``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {prefix.strip()} line within {timeout:g} s")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"worker exited (code {self.proc.poll()})")
            if line.startswith(prefix):
                return line[len(prefix) :].strip()

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stderr_tail(self, n: int = 800) -> str:
        try:
            self.stderr.seek(0)
            data = self.stderr.read()
        except (OSError, ValueError):
            return ""
        return data[-n:].decode(errors="replace").strip()

    def stop(self, timeout: float = 5.0) -> None:
        proc = self.proc
        if proc.poll() is None:
            try:
                assert proc.stdin is not None
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.send_signal(signal.SIGTERM)
            except OSError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.stderr.close()


class WorkerPair:
    """One server and one client process for a system on an event loop."""

    def __init__(self, settings: Settings, system: str, loop: str) -> None:
        self.system = system
        self.loop = loop
        self.settings = settings
        env = dict(os.environ)
        env.update(SYSTEMS[system].env)
        env.setdefault("PYTHONHASHSEED", "0")
        self.env = env
        self.base = [
            sys.executable,
            "-m",
            "mio._bench.worker",
            "--system",
            system,
            "--loop",
            loop,
            "--opts",
            json.dumps(system_opts(settings, system)),
        ]
        self.server: _Proc | None = None
        self.client: _Proc | None = None
        self.ready: dict[str, Any] = {}

    def spawn_server(self) -> None:
        cmd = [*self.base[:3], "server", *self.base[3:]]
        if self.settings.verify:
            cmd.append("--verify-content")
        self.server = _Proc(cmd, self.env)

    def spawn_client(self, timeout: float = 60.0) -> None:
        assert self.server is not None
        try:
            self.ready = json.loads(self.server.expect("READY ", timeout))
        except (TimeoutError, RuntimeError) as exc:
            raise RuntimeError(
                f"{self.system}/{self.loop} server did not start: {exc}\n"
                + self.server.stderr_tail()
            ) from None
        cmd = [*self.base[:3], "client", *self.base[3:]]
        cmd += ["--ports", json.dumps(self.ready["ports"]), "--server-pid", str(self.ready["pid"])]
        self.client = _Proc(cmd, self.env)

    def run(self, workload: str, totals: C.Totals, verify: bool) -> dict[str, Any]:
        assert self.client is not None
        cmd = {"workload": workload, "totals": totals.as_dict(), "verify": verify}
        try:
            self.client.send(json.dumps(cmd))
            # repetitions: timed work stops growing once min_timed_s is reached, so at worst
            # the last repetition's full timeout comes on top of it
            wait = totals.timeout + (
                totals.timeout + 2 * totals.min_timed_s if totals.min_timed_s else 0
            )
            line = self.client.expect("RESULT ", wait + 30.0)
            rec: dict[str, Any] = json.loads(line)
        except (OSError, TimeoutError, RuntimeError, ValueError) as exc:
            rec = {"ok": False, "error": f"worker: {type(exc).__name__}: {exc}"}
        if self.ready.get("ext_error"):
            rec["ok"] = False
            rec["error"] = "server: " + self.ready["ext_error"]
        if not rec.get("ok"):
            tail = "\n".join(p.stderr_tail(400) for p in (self.client, self.server) if p)
            if tail.strip():
                rec["stderr_tail"] = tail
        return rec

    def stop(self) -> None:
        for proc in (self.client, self.server):
            if proc is not None:
                proc.stop()
        self.client = self.server = None


def _start_pairs(settings: Settings, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Any]:
    """Start every pair in parallel; a pair that fails to start maps to its error message."""
    pairs: dict[tuple[str, str], Any] = {}
    for key in keys:
        pair = WorkerPair(settings, *key)
        pair.spawn_server()
        pairs[key] = pair
    for key, pair in list(pairs.items()):
        try:
            pair.spawn_client()
        except RuntimeError as exc:
            pair.stop()
            pairs[key] = str(exc)
    return pairs


def _machine() -> dict[str, Any]:
    import mio

    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover - Windows
        load = None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "mio": mio.__version__,
        "loadavg1": load,
    }


def _contaminated(rec: dict[str, Any]) -> bool:
    el = rec.get("elapsed_s") or 0.0
    fp = rec.get("foreign_cpu_pct")
    fproc = rec.get("foreign_proc_pct") or 0.0
    # CPU times tick in 10 ms steps: runs shorter than 0.2 s cannot be judged
    return bool(
        (el >= 0.2 and fproc > FOREIGN_PROC_MAX)
        or (el >= 1.0 and fp is not None and fp > FOREIGN_MAX)
    )


def _gate(threshold: float, max_wait: float = 10.0) -> tuple[float | None, float]:
    t0 = time.monotonic()
    while True:
        busy = C.busy_pct(0.5)
        if busy is None or busy < threshold or time.monotonic() - t0 > max_wait:
            return (None if busy is None else round(busy, 1)), round(time.monotonic() - t0, 1)


def run_bench(settings: Settings, progress: ProgressFn | None = None) -> BenchResult:
    """Run the plan; append every record to ``settings.out`` as it is made."""
    plan, notes = make_plan(settings)
    run_id = time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"
    meta: dict[str, Any] = {
        "type": "meta",
        "run_id": run_id,
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "preset": settings.preset,
        "totals": settings.totals.as_dict(),
        "systems": settings.systems,
        "workloads": settings.workloads,
        "loops": settings.loops,
        "rounds": settings.rounds,
        "verify": settings.verify,
        "opts": settings.opts,
        "gate": settings.gate,
        "attempts": settings.attempts,
        "notes": notes,
        "argv": settings.argv,
        **_machine(),
    }
    result = BenchResult(meta, [])
    out: IO[str] | None = None
    if settings.out is not None:
        settings.out.parent.mkdir(parents=True, exist_ok=True)
        out = open(settings.out, "a")  # noqa: SIM115 - closed in finally
        out.write(json.dumps(meta) + "\n")
        out.flush()
    keys = list(dict.fromkeys((item.system, item.loop) for item in plan))
    pairs: dict[tuple[str, str], Any] = {}
    t_start = time.monotonic()
    try:
        pairs = _start_pairs(settings, keys)
        for key, pair in pairs.items():
            if isinstance(pair, str):
                notes.append(f"{key[0]}/{key[1]}: {pair}")
        if settings.warmup:
            for key, pair in pairs.items():
                if isinstance(pair, str):
                    continue
                for workload in settings.workloads:
                    if workload in SYSTEMS[key[0]].workloads:
                        rec = pair.run(workload, WARMUP, settings.verify)
                        if not rec.get("ok"):
                            notes.append(
                                f"warm-up {workload} {key[0]}/{key[1]} failed: {rec.get('error')}"
                            )
                            pair.stop()
                            pairs[key] = pair = _restart(settings, key)
                            if isinstance(pair, str):
                                break
        meta["startup_s"] = round(time.monotonic() - t_start, 2)
        for index, item in enumerate(plan):
            if progress is not None:
                progress(index, len(plan), item, None)
            rec = _run_item(settings, pairs, item, run_id, out)
            result.records.append(rec)
            if progress is not None:
                progress(index + 1, len(plan), item, rec)
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        for pair in pairs.values():
            if pair is not None and not isinstance(pair, str):  # None: stopped after a failure
                pair.stop()
        meta["wall_s"] = round(time.monotonic() - t_start, 2)
        if out is not None:
            out.write(
                json.dumps(
                    {
                        "type": "end",
                        "run_id": run_id,
                        "wall_s": meta["wall_s"],
                        "interrupted": result.interrupted,
                        "startup_s": meta.get("startup_s"),
                        "notes": notes,
                    }
                )
                + "\n"
            )
            out.close()
    return result


def _restart(settings: Settings, key: tuple[str, str]) -> Any:
    return _start_pairs(settings, [key])[key]


def _run_item(
    settings: Settings,
    pairs: dict[tuple[str, str], Any],
    item: PlanItem,
    run_id: str,
    out: IO[str] | None,
) -> dict[str, Any]:
    key = (item.system, item.loop)
    rec: dict[str, Any] = {}
    for attempt in range(max(1, settings.attempts)):
        pair = pairs.get(key)
        if pair is None or isinstance(pair, str):
            pairs[key] = pair = _restart(settings, key)
        gate_busy = gate_wait = None
        if settings.gate is not None:
            gate_busy, gate_wait = _gate(settings.gate)
        t0 = time.monotonic()
        if isinstance(pair, str):
            rec = {"ok": False, "error": pair}
        else:
            rec = pair.run(item.workload, settings.totals, settings.verify)
        rec = {
            "type": "run",
            "run_id": run_id,
            "round": item.round,
            "attempt": attempt,
            "system": item.system,
            "loop": item.loop,
            "workload": item.workload,
            "preset": settings.preset,
            **rec,
            "wall_s": round(time.monotonic() - t0, 3),
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        if gate_busy is not None:
            rec["gate_busy_pct"], rec["gate_wait_s"] = gate_busy, gate_wait
        rec["contaminated"] = _contaminated(rec)
        if out is not None:
            out.write(json.dumps(rec) + "\n")
            out.flush()
        if not rec.get("ok") and not isinstance(pair, str):
            pair.stop()  # a fresh pair for the next run of this system
            pairs[key] = None
        if rec.get("ok") and not rec["contaminated"]:
            break
    return rec


# ---------------------------------------------------------------------------- progress line
def headline(rec: dict[str, Any]) -> str:
    """The key numbers of a run record, for progress output."""
    if not rec.get("ok"):
        return f"FAILED: {rec.get('error')}"
    w = rec.get("workload")
    if w == "W1":
        return f"{rec.get('MBps', 0):,.0f} MB/s"
    if w == "W2":
        return f"{rec.get('rps', 0):,.0f} req/s, p99 {rec.get('p99_us', 0) / 1000:.2f} ms"
    if w == "W3":
        return f"{rec.get('rtps', 0):,.0f} rt/s in {rec.get('total_s', 0):.2f} s"
    if w == "W4":
        return (
            f"p99 {rec.get('alone_p99_us', 0) / 1000:.2f} → "
            f"{rec.get('bulk_p99_us', 0) / 1000:.2f} ms (×{rec.get('p99_ratio', 0):.2f})"
        )
    return ""


class Progress:
    """A live progress line on a stream (``\\r`` + ANSI erase on a terminal, else one line per
    finished run)."""

    def __init__(self, stream: IO[str] | None = None, enabled: bool = True) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.monotonic()
        self.failures = 0

    def __call__(self, done: int, total: int, item: PlanItem, rec: dict[str, Any] | None) -> None:
        if not self.enabled:
            return
        if rec is not None and not rec.get("ok"):
            self.failures += 1
        elapsed = time.monotonic() - self.t0
        width = 24
        filled = int(width * done / max(total, 1))
        bar = "#" * filled + "-" * (width - filled)
        eta = ""
        if done and done < total:
            eta = f" eta {elapsed / done * (total - done):.0f}s"
        if self.tty:
            what = f"{item.label}: {headline(rec)}" if rec is not None else f"{item.label} ..."
            line = f"[{bar}] {done}/{total} {elapsed:.0f}s{eta}  {what}"
            cols = 120
            try:
                cols = os.get_terminal_size(self.stream.fileno()).columns
            except (OSError, ValueError, AttributeError):
                pass
            self.stream.write("\r\x1b[2K" + line[: max(cols - 1, 20)])
            if done == total and rec is not None:
                self.stream.write("\n")
            self.stream.flush()
        elif rec is not None:
            self.stream.write(
                f"[{bar}] {done}/{total} {elapsed:.0f}s  {item.label}: {headline(rec)}\n"
            )
            self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


# ---------------------------------------------------------------------------- command line
def _csv(choices: Sequence[str], what: str) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        if items == ["all"]:
            return list(choices)
        bad = [x for x in items if x not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(bad) or '(none)'}; choose from {', '.join(choices)}"
            )
        return items

    return parse


def catalogue() -> str:
    """Help text: the systems, workloads and targets."""
    from .summary import TARGETS

    lines = ["systems:"]
    for s in SYSTEMS.values():
        lines.append(f"  {s.name:9} {s.description} [{' '.join(s.workloads)}]")
    lines.append("workloads (full sizes; --quick scales them down):")
    full = C.PRESETS["full"]
    for w in WORKLOADS.values():
        lines.append(f"  {w.name}  {w.title}: {w.describe(full)}")
    lines.append("targets (ratios of two runs of the same round):")
    for t in TARGETS:
        lines.append(f"  {t.text}")
    return "\n".join(lines)


def _gate_arg(text: str) -> float:
    if text.strip().lower() in ("off", "none", "no"):
        return -1.0
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentage or 'off', got {text!r}") from None


def add_common_arguments(ap: argparse.ArgumentParser, *, loops_flag: str = "--loops") -> None:
    """The options shared by ``benchmarks/e2e/run.py`` and ``mio bench``."""
    ap.add_argument(
        "--quick",
        action="store_true",
        help="scaled-down totals: the whole default matrix finishes in about 90 s "
        "(numbers for orientation only; the targets refer to the full sizes)",
    )
    ap.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--rounds",
        type=int,
        default=None,
        metavar="N",
        help="rounds; every round runs each system once per workload and loop (default 5, "
        "3 with --quick)",
    )
    ap.add_argument(
        "--systems",
        type=_csv(list(SYSTEMS), "system"),
        default=None,
        metavar="LIST",
        help=f"comma-separated subset of: {', '.join(SYSTEMS)} (default all; with --quick "
        "all but mio-quic, to keep the preview short)",
    )
    ap.add_argument(
        "--workloads",
        type=_csv(list(WORKLOADS), "workload"),
        default=list(WORKLOADS),
        metavar="LIST",
        help=f"comma-separated subset of: {', '.join(WORKLOADS)} (default all)",
    )
    if loops_flag == "--loops":
        ap.add_argument(
            "--loops",
            type=_csv(list(C.LOOPS), "loop"),
            default=list(C.LOOPS),
            metavar="LIST",
            help="comma-separated event loops: asyncio,uvloop (default both)",
        )
    else:
        ap.add_argument(
            "--loop",
            choices=["asyncio", "uvloop", "both"],
            default="both",
            help="event loop of every process (default both)",
        )
    ap.add_argument(
        "--verify-content",
        action="store_true",
        help="bulk: the server CRC-32s every byte and the client checks it (costs server CPU)",
    )
    ap.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="FAMILY.NAME=VALUE",
        help="system option, repeatable: mio.<Config field> (e.g. mio.initial_window=1048576), "
        "h2.h2_window, h2.h2_frame_size, quic.quic_no_pacing=1, ...",
    )
    ap.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="per-run time limit (default 55 s, 20 s with --quick)",
    )
    ap.add_argument(
        "--gate",
        type=_gate_arg,
        default=None,
        metavar="PCT|off",
        help="before each run wait (up to 10 s) until the machine is less busy than PCT %% of "
        "one core (default 15 for full runs, off with --quick)",
    )
    ap.add_argument(
        "--attempts",
        type=int,
        default=None,
        metavar="N",
        help="re-run a slot while other processes used the CPU during it (default 3 for full "
        "runs, 1 with --quick)",
    )
    ap.add_argument("--no-warmup", action="store_true", help="skip the warm-up runs")


def settings_from_args(args: argparse.Namespace, argv: Sequence[str]) -> Settings:
    preset = "smoke" if args.smoke else "quick" if args.quick else "full"
    totals = C.PRESETS[preset]
    if args.timeout is not None:
        totals = dataclasses.replace(totals, timeout=args.timeout)
    if hasattr(args, "loops"):
        loops = args.loops
    else:
        loops = list(C.LOOPS) if args.loop == "both" else [args.loop]
    full = preset == "full"
    rounds = args.rounds if args.rounds is not None else (1 if args.smoke else 5 if full else 3)
    if rounds < 1:
        raise ValueError("--rounds must be at least 1")
    systems = args.systems
    if systems is None:
        systems = [name for name in SYSTEMS if full or name != "mio-quic"]
    return Settings(
        systems=systems,
        workloads=args.workloads,
        loops=loops,
        rounds=rounds,
        preset=preset,
        totals=totals,
        verify=args.verify_content,
        opts=parse_opt(args.opt),
        gate=(15.0 if full else None)
        if args.gate is None
        else None
        if args.gate < 0
        else args.gate,
        attempts=args.attempts if args.attempts is not None else (3 if full else 1),
        warmup=not args.no_warmup and not args.smoke,
        argv=list(argv),
    )


def main(argv: Sequence[str] | None = None, results_dir: Path | None = None) -> int:
    """``benchmarks/e2e/run.py``: run, append to results.jsonl, write RESULTS.md and the PNG."""
    from . import plot, summary

    argv = list(sys.argv[1:] if argv is None else argv)
    results_dir = results_dir or Path("benchmarks/results")
    ap = argparse.ArgumentParser(
        prog="run.py",
        description="End-to-end loopback benchmark of mio against raw asyncio TCP, h2 and "
        "aioquic (client and server in separate processes on 127.0.0.1).",
        epilog=catalogue(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(ap)
    ap.add_argument(
        "--out",
        type=Path,
        default=results_dir / "results.jsonl",
        help="JSON lines file, appended (default %(default)s)",
    )
    ap.add_argument(
        "--md",
        type=Path,
        default=results_dir / "RESULTS.md",
        help="Markdown summary of this run (default %(default)s)",
    )
    ap.add_argument(
        "--png",
        type=Path,
        default=results_dir / "results.png",
        help="plot of this run (default %(default)s)",
    )
    ap.add_argument("--no-progress", action="store_true", help="no progress output on stderr")
    args = ap.parse_args(argv)
    try:
        settings = settings_from_args(args, argv)
    except ValueError as exc:
        ap.error(str(exc))
    settings.out = args.out
    prog = Progress(enabled=not args.no_progress)
    result = run_bench(settings, prog)
    prog.finish()
    text = summary.render(result.meta, result.records)
    args.md.parent.mkdir(parents=True, exist_ok=True)
    args.md.write_text(text)
    print(text)
    note = plot.plot(result.meta, result.records, args.png)
    print(
        f"\nresults: {args.out} (run {result.meta['run_id']}), {args.md}"
        + (f", {args.png}" if note is None else f"; no plot: {note}"),
        file=sys.stderr,
    )
    if result.interrupted:
        return 130
    return 1 if result.failed else 0

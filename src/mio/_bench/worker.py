"""Child processes of the benchmark: ``python -m mio._bench.worker server|client ...``.

``server --system S --loop L``: listens on 127.0.0.1 for every workload of system ``S``,
prints ``READY {json}`` (ports, pid), then serves until SIGTERM or until its stdin closes
(so it never outlives the runner).

``client --system S --loop L --ports JSON --server-pid N``: reads one JSON command per stdin
line (``{"workload": "W2", "totals": {...}, "verify": false}``), runs that workload in a
fresh event loop against the server, and prints ``RESULT {json}``. Exits at end of input.

Both ignore SIGINT: the runner handles Ctrl-C and stops them.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import os
import signal
import sys
import threading
import traceback
from typing import Any

from . import common as C
from .systems import SYSTEMS, load
from .workloads import WORKLOADS


def _expect_extensions(system: str) -> bool | None:
    return {"mio": True, "mio-cb": True, "mio-pure": False}.get(system)


def _ext_error(system: str) -> str | None:
    expect = _expect_extensions(system)
    if expect is None:
        return None
    import mio

    if expect != mio.EXTENSIONS_ACTIVE:
        return f"{system}: mio.EXTENSIONS_ACTIVE is {mio.EXTENSIONS_ACTIVE}, expected {expect}"
    return None


# ---------------------------------------------------------------------------- server
async def _serve(args: argparse.Namespace) -> None:
    system = SYSTEMS[args.system]
    module = load(system)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    try:
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    except NotImplementedError:  # pragma: no cover - Windows
        pass

    def watch_stdin() -> None:
        # os.read, not sys.stdin: a daemon thread blocked in a buffered read aborts the
        # interpreter's shutdown ("could not acquire lock for <stdin>")
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch_stdin, daemon=True).start()
    loop.call_later(args.lifetime, stop.set)
    stats: dict[str, Any] = {}
    ports = await module.serve(json.loads(args.opts), stats, args.verify_content)
    ports["cpu"] = await C.serve_cpu()
    ready = {"ports": ports, "pid": os.getpid(), "ext_error": _ext_error(args.system)}
    print("READY " + json.dumps(ready), flush=True)
    await stop.wait()
    print("STATS " + json.dumps(stats), flush=True)


# ---------------------------------------------------------------------------- client
async def _run_once(
    args: argparse.Namespace,
    module: Any,
    ports: dict[str, int],
    totals: C.Totals,
    cmd: dict[str, Any],
) -> dict[str, Any]:
    """One repetition: a fresh client (fresh connections), the workload, close."""
    workload = WORKLOADS[cmd["workload"]]
    client = module.Client(ports, json.loads(args.opts), SYSTEMS[args.system].variant)
    meter = C.Meter(args.server_pid, cpu_port=ports.get("cpu", 0))
    out: dict[str, Any]
    try:
        out = await asyncio.wait_for(
            workload.run(client, totals, meter, bool(cmd.get("verify"))), totals.timeout
        )
    except TimeoutError:
        out = {"ok": False, "error": f"timeout after {totals.timeout:g} s"}
    except Exception as exc:
        traceback.print_exc()
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    try:
        extra = client.stats()
        if extra:
            out["client_stats"] = extra
        await asyncio.wait_for(client.close(), 5.0)
    except Exception as exc:
        out.setdefault("close_error", f"{type(exc).__name__}: {exc}")
    if meter.t1 is not None:
        out.update(meter.report())
    return out


#: per workload: the record field counting its units of work (for CPU per unit)
UNITS = {"W1": "bytes", "W2": "requests", "W3": "roundtrips"}  # W4: two phases, one timed


def combine(workload: str, reps: list[dict[str, Any]]) -> dict[str, Any]:
    """One record from the repetitions of a run: the median repetition (by the workload's
    headline metric) with every repetition's value, and CPU summed over all of them."""
    if len(reps) == 1 and not reps[0].get("ok"):
        return reps[0]
    bad = [r for r in reps if not r.get("ok")]
    if bad:
        out = dict(bad[0])
        out["error"] = f"repetition {reps.index(bad[0]) + 1}: {out.get('error')}"
        return out
    wl = WORKLOADS[workload]
    key = wl.key
    ranked = sorted(reps, key=lambda r: r.get(key) or 0.0)
    # with an even count, the worse of the two middle repetitions (never flatter a run)
    middle = (len(ranked) - 1) // 2 if wl.higher_is_better else len(ranked) // 2
    out = dict(ranked[middle])
    out["reps"] = len(reps)
    out["rep_values"] = [r.get(key) for r in reps]
    elapsed = sum(r.get("elapsed_s", 0.0) for r in reps)
    client = sum(r.get("cpu_client_s", 0.0) for r in reps)
    out["timed_s"] = round(elapsed, 3)
    out["elapsed_s"] = round(elapsed, 4)  # the run's timed work: contamination is judged on it
    out["cpu_client_s"] = round(client, 4)
    out["cpu_client_pct"] = round(100 * client / max(elapsed, 1e-9), 1)
    for share in ("foreign_cpu_pct", "foreign_proc_pct", "steal_pct"):
        if all(share in r for r in reps):  # time-weighted over every repetition
            total = sum(r[share] * r.get("elapsed_s", 0.0) for r in reps)
            out[share] = round(total / max(elapsed, 1e-9), 1)
    units = sum(r.get(UNITS[workload], 0) for r in reps) if workload in UNITS else 0
    if all("cpu_server_s" in r for r in reps):
        server = sum(r["cpu_server_s"] for r in reps)
        out["cpu_server_s"] = round(server, 4)
        out["cpu_server_pct"] = round(100 * server / max(elapsed, 1e-9), 1)
        if units:
            scale = 1e6 if workload == "W1" else 1.0  # W1: per MB; others: per request
            out["cpu_us_per_unit"] = round((client + server) * 1e6 * scale / units, 2)
            out["cpu_client_us_per_unit"] = round(client * 1e6 * scale / units, 2)
            out["cpu_server_us_per_unit"] = round(server * 1e6 * scale / units, 2)
    return out


async def _run_workload(
    args: argparse.Namespace, module: Any, ports: dict[str, int], cmd: dict[str, Any]
) -> dict[str, Any]:
    totals = C.Totals(**cmd["totals"])
    reps: list[dict[str, Any]] = []
    timed = 0.0
    while True:
        rec = await _run_once(args, module, ports, totals, cmd)
        reps.append(rec)
        if not rec.get("ok"):
            break
        timed += rec.get("elapsed_s", 0.0)
        if timed >= totals.min_timed_s or len(reps) >= totals.max_reps:
            break
        gc.collect()
    return combine(cmd["workload"], reps)


def _client(args: argparse.Namespace) -> None:
    system = SYSTEMS[args.system]
    module = load(system)
    ports = json.loads(args.ports)
    ext_error = _ext_error(args.system)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        cmd = json.loads(line)
        if cmd.get("quit"):
            break
        gc.collect()
        if ext_error:
            result: dict[str, Any] = {"ok": False, "error": ext_error}
        else:
            result = C.run_in_loop(
                args.loop, functools.partial(_run_workload, args, module, ports, cmd)
            )
        result.setdefault("error", None)
        print("RESULT " + json.dumps(result), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mio._bench.worker", description=__doc__)
    ap.add_argument("role", choices=["server", "client"])
    ap.add_argument("--system", required=True, choices=sorted(SYSTEMS))
    ap.add_argument("--loop", default="asyncio", choices=C.LOOPS)
    ap.add_argument("--opts", default="{}", help="JSON object of system options")
    ap.add_argument("--verify-content", action="store_true")
    ap.add_argument("--ports", default="{}", help="client: JSON object from the server's READY")
    ap.add_argument("--server-pid", type=int, default=0)
    ap.add_argument("--lifetime", type=float, default=6 * 3600.0)
    args = ap.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if args.role == "server":
        C.run_in_loop(args.loop, lambda: _serve(args))
    else:
        _client(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

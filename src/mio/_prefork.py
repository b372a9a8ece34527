"""Pre-forked workers sharing one TCP port (``mio echo --workers N``).

The model: each worker is a whole mio server in its own process, listening on the same port
with ``SO_REUSEPORT``; the kernel spreads incoming connections over the workers (by a hash
of the connection's addresses). A session lives in the worker that accepted it, so the
streams of a session never cross processes. The parent only supervises:

- it reserves the port first (a bound, non-listening ``SO_REUSEPORT`` socket), so that with
  port 0 every worker binds the same port and nobody else takes it meanwhile;
- it forks the workers before any event loop exists, waits until every one of them listens
  (one byte each on a pipe), then prints one readiness line;
- SIGINT/SIGTERM are forwarded to every worker (each one drains its streams for ``--grace``
  seconds and exits); a second signal is forwarded too (workers then close at once);
  SIGHUP stops them as SIGTERM does;
- a worker whose parent is gone (even killed with SIGKILL) stops by itself: it watches a
  pipe whose write end only the parent holds;
- a worker that exits on its own is a failure: the others are stopped and the parent exits 1.
  Run it under a supervisor (systemd, a container runtime) for restarts.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable

__all__ = ("available", "reserve_port", "run_workers")


def available() -> str | None:
    """None if pre-forked workers work here, else why not."""
    if not hasattr(os, "fork"):
        return "--workers needs os.fork (not available on this platform)"
    if not hasattr(socket, "SO_REUSEPORT"):
        return "--workers needs SO_REUSEPORT (not available on this platform)"
    return None


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, non-listening ``SO_REUSEPORT`` socket holding ``host:port`` (the chosen port
    when ``port`` is 0): workers binding the same address with ``reuse_port=True`` join it,
    and it receives no connections itself."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, type_, proto, _, addr = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
    except BaseException:
        sock.close()
        raise
    return sock


def _exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def run_workers(
    count: int,
    worker: Callable[[int, int, int], int],
    *,
    on_ready: Callable[[list[int]], None],
    log: Callable[[str], None],
    start_timeout: float = 30.0,
) -> int:
    """Fork ``count`` workers running ``worker(index, ready_fd, life_fd)`` and supervise
    them until they exit; returns the exit code.

    A worker writes one byte to ``ready_fd`` once it listens, and stops when ``life_fd``
    becomes readable (end of file: the parent is gone, even killed with SIGKILL).
    ``on_ready(pids)`` runs once every worker listens.
    """
    ready_r, ready_w = os.pipe()
    life_r, life_w = os.pipe()  # the parent holds life_w; its death closes it
    pids: dict[int, int] = {}  # pid -> worker index
    stopping = False
    failed = False

    def stop_all(sig: int) -> None:
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        # SIGHUP (the terminal went away): the workers stop as for SIGTERM
        stop_all(signal.SIGTERM if signum == signal.SIGHUP else signum)

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, on_signal) for sig in signals}
    sys.stdout.flush()
    sys.stderr.flush()
    code = 1
    try:
        for index in range(count):
            if stopping:
                break
            pid = os.fork()
            if pid == 0:  # the worker
                code = 1
                try:
                    os.close(ready_r)
                    os.close(life_w)
                    # Own process group: a terminal's Ctrl-C reaches the parent only, which
                    # forwards it once (a second signal would mean "close at once").
                    os.setpgid(0, 0)
                    for sig in signals:
                        signal.signal(sig, signal.SIG_DFL)
                    code = worker(index, ready_w, life_r)
                except BaseException as exc:  # the worker's own error reporting failed
                    print(f"mio worker {index}: {type(exc).__name__}: {exc}", file=sys.stderr)
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            pids[pid] = index
        os.close(ready_w)
        ready_w = -1

        # -- start-up: one byte per worker once it listens
        ready = 0
        deadline = time.monotonic() + start_timeout
        while ready < count and not stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                log(f"workers not listening after {start_timeout:g} s: stopping")
                failed = True
                break
            readable, _, _ = select.select([ready_r], [], [], min(left, 0.5))
            if readable:
                data = os.read(ready_r, count)
                if not data:  # every worker closed the pipe: some died before listening
                    log("a worker exited before listening: stopping the others")
                    failed = True
                    break
                ready += len(data)
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid:
                log(f"worker {pids.pop(pid)} exited with code {_exit_code(status)} at start")
                failed = True
                break
        if failed:
            stop_all(signal.SIGTERM)
        elif not stopping:
            on_ready(sorted(pids))
        # -- supervise
        code = 1 if failed else 0
        while pids:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            index = pids.pop(pid)
            exit_code = _exit_code(status)
            if not stopping and not failed:
                log(f"worker {index} (pid {pid}) exited with code {exit_code}: stopping the others")
                failed = True
                code = 1
                stop_all(signal.SIGTERM)
            elif exit_code != 0:
                if failed:
                    log(f"worker {index} (pid {pid}) exited with code {exit_code}")
                code = 1
        return code
    finally:
        if pids:  # an exception above (a failed fork, on_ready raising): no orphans
            stop_all(signal.SIGTERM)
            for pid in list(pids):
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
        for fd in (ready_r, ready_w, life_r, life_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        for sig, handler in previous.items():
            signal.signal(sig, handler)

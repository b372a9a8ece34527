"""The ``mio`` command line: ``mio echo``, ``mio bench``, ``mio --version`` and the tunnel
commands of :mod:`mio.tunnel`.

Every command returns an exit code: 0 on success, 1 on failure, 2 on a usage error, 130 when
interrupted. ``python -m mio`` runs the same entry point.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import platform
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import _clikit, _impl
from ._allocator import tune_allocator
from ._version import DISTRIBUTION, __version__
from .api import DEFAULT_MAX_SESSIONS
from .budget import DEFAULT_SERVER_MEMORY
from .config import Config
from .tunnel import cli as tunnel_cli  # stdlib only: a failed import is a bug, not "no tunnel"

__all__ = (
    "main",
    "build_parser",
    "version_text",
    "add_config_arguments",
    "config_from_args",
    "add_logging_arguments",
    "setup_logging",
    "parse_hostport",
    "parse_size",
)

log = logging.getLogger("mio.echo")

EPILOG = """\
examples:
  mio echo --listen 127.0.0.1:7000          echo server (every stream echoed until EOF)
  mio echo --listen :7000 --window 1M -v    all interfaces, 1 MiB stream windows, logging
  mio bench --quick                         the comparison benchmark in about 90 seconds
  mio bench --systems mio,tcp-b --loop uvloop --json out.jsonl --plot out.png
  mio COMMAND --help                        the options of one command
"""

ECHO_DESCRIPTION = """\
Listen for MIO sessions over TCP and echo every stream the clients open: whatever
arrives is written back until the client half-closes (write_eof), then the stream is
closed. Prints "listening on HOST:PORT" on stdout once ready (with port 0, the port
the system picked).

SIGINT or SIGTERM: stop accepting, let open streams finish (up to --grace seconds),
close every session, exit with code 0. A second signal closes everything at once.
"""
ECHO_EPILOG = """\
examples:
  mio echo --listen 127.0.0.1:0                 any free port (printed)
  mio echo --listen [::1]:7000 --window 1M -v   IPv6, 1 MiB stream windows, session log
  mio echo --peer reference                     what an unconfigured reference (Go) peer needs
  mio echo --max-sessions 100 --memory-limit 256M   server-wide limits
  mio echo --keepalive 10 --idle-timeout 30     drop peers that go silent
"""


# ---------------------------------------------------------------------------- version
def version_text() -> str:
    """``mio-mux X.Y.Z (...)``: the distribution, its version and whether the compiled
    extensions are active."""
    if _impl.EXTENSIONS_ACTIVE:
        ext = "compiled extensions active"
    else:
        if platform.python_implementation() != "CPython":
            why = f"not available on {platform.python_implementation()}"
        elif _impl.NO_EXTENSIONS:
            why = "disabled by MIO_NO_EXTENSIONS"
        else:
            why = "not built in this install"
        ext = f"compiled extensions NOT active: pure-Python codec, {why}"
    py = f"{platform.python_implementation()} {platform.python_version()}"
    return f"{DISTRIBUTION} {__version__} ({ext}; {py})"


# ---------------------------------------------------------------------------- value parsers
# One toolkit for every mio command line (see mio._clikit); argparse types built from it.
parse_size = _clikit.arg_type(_clikit.parse_size, "size")
parse_size.__doc__ = _clikit.parse_size.__doc__
_seconds = _clikit.arg_type(_clikit.parse_seconds, "seconds")
_seconds_or_off = _clikit.arg_type(_clikit.parse_seconds_or_off, "seconds")
_count = _clikit.arg_type(_clikit.parse_count, "integer")
_count_or_off = _clikit.arg_type(_clikit.parse_count_or_off, "integer")
_yes_no = _clikit.arg_type(_clikit.parse_yes_no, "yes|no")


def parse_hostport(text: str) -> tuple[str | None, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (all interfaces) → ``(host, port)``."""
    try:
        return _clikit.parse_hostport(text, listen=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_format_addr = _clikit.format_address


# ---------------------------------------------------------------------------- Config flags
_human_size = _clikit.format_size


@dataclasses.dataclass(frozen=True)
class _Flag:
    field: str
    flags: tuple[str, ...]
    type: Callable[[str], Any]
    metavar: str
    help: str


#: one command-line flag per :class:`Config` field (a field missing here gets a generic flag)
CONFIG_FLAGS: tuple[_Flag, ...] = (
    _Flag(
        "initial_window",
        ("--window", "--initial-window"),
        parse_size,
        "BYTES",
        "receive window advertised for each new stream, per direction",
    ),
    _Flag(
        "max_window",
        ("--max-window",),
        parse_size,
        "BYTES",
        "auto-tuning ceiling of a stream's receive window",
    ),
    _Flag(
        "max_open_window",
        ("--max-open-window",),
        parse_size,
        "BYTES",
        "largest window accepted in a peer's OPEN; larger OPENs are refused",
    ),
    _Flag(
        "max_session_memory",
        ("--max-session-memory",),
        parse_size,
        "BYTES",
        "most unread inbound data held for the peer; over it the session stops reading",
    ),
    _Flag(
        "max_frame_size",
        ("--max-frame-size",),
        parse_size,
        "BYTES",
        "largest DATA payload sent (128 for an unconfigured reference peer: see --peer)",
    ),
    _Flag(
        "max_recv_frame_size",
        ("--max-recv-frame-size",),
        parse_size,
        "BYTES",
        "largest DATA payload accepted (a larger one closes the session)",
    ),
    _Flag(
        "max_streams",
        ("--max-streams",),
        _count,
        "N",
        "most concurrent streams the peer may open (over it: RST REFUSED)",
    ),
    _Flag(
        "accept_backlog",
        ("--accept-backlog",),
        _count,
        "N",
        "streams opened by the peer and not yet accepted (over it: RST REFUSED)",
    ),
    _Flag(
        "write_buffer_high",
        ("--write-buffer-high",),
        parse_size,
        "BYTES",
        "transport write-buffer high-water mark (above it drain() waits)",
    ),
    _Flag(
        "keepalive_interval",
        ("--keepalive",),
        _seconds_or_off,
        "SECONDS|off",
        "send a keepalive after this much outbound silence",
    ),
    _Flag(
        "idle_timeout",
        ("--idle-timeout",),
        _seconds_or_off,
        "SECONDS|off",
        "close a session that sent nothing for this long",
    ),
    _Flag(
        "linger_timeout",
        ("--linger-timeout",),
        _seconds,
        "SECONDS",
        "how long a closed stream waits for the peer's end before RST NO_ERROR",
    ),
    _Flag(
        "close_timeout",
        ("--close-timeout",),
        _seconds,
        "SECONDS",
        "how long a graceful session close lets open streams finish",
    ),
    _Flag(
        "send_resets",
        ("--send-resets",),
        _yes_no,
        "yes|no",
        "no: never send RST where mio has a choice (a reference peer hangs on any RST)",
    ),
)

#: ``--peer``: the base Config that explicit flags then override.
PEER_PRESETS: dict[str, Callable[[], Config]] = {
    "mio": Config,
    "reference": Config.for_reference,
}


def _config_flags() -> list[_Flag]:
    known = {f.field for f in CONFIG_FLAGS}
    flags = list(CONFIG_FLAGS)
    for field in dataclasses.fields(Config):
        if field.name in known:
            continue
        default = field.default
        kind: Callable[[str], Any]
        metavar = "VALUE"
        if default is None:
            kind = _seconds_or_off
        elif isinstance(default, bool):  # before int: a bool is an int
            kind, metavar = _yes_no, "yes|no"
        elif isinstance(default, float):
            kind = _seconds
        else:
            kind = _count
        flags.append(
            _Flag(
                field.name,
                ("--" + field.name.replace("_", "-"),),
                kind,
                metavar,
                f"mio.Config.{field.name}",
            )
        )
    return flags


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--peer`` and one flag per :class:`mio.Config` field (group "session
    parameters")."""
    defaults = Config()
    group = parser.add_argument_group(
        "session parameters (mio.Config; sizes take K/M/G suffixes, powers of 1024)"
    )
    group.add_argument(
        "--peer",
        choices=sorted(PEER_PRESETS),
        default="mio",
        help="kind of peer the settings are for: mio (default: mio.Config()) or reference "
        "(mio.Config.for_reference(): DATA frames of at most 128 bytes, 0xFFFFFF windows, "
        "--send-resets no, for an unconfigured reference Go peer); the flags below "
        "override the preset (the defaults they show are mio's)",
    )
    for flag in _config_flags():
        default = getattr(defaults, flag.field)
        if default is None:
            shown = "off"
        elif isinstance(default, bool):
            shown = "yes" if default else "no"
        elif flag.type is parse_size:
            shown = _human_size(default)
        else:
            shown = f"{default:g}" if isinstance(default, float) else str(default)
        group.add_argument(
            *flag.flags,
            dest=f"cfg_{flag.field}",
            type=flag.type,
            default=argparse.SUPPRESS,
            metavar=flag.metavar,
            help=f"{flag.help} (default {shown}; Config.{flag.field})",
        )


def config_from_args(args: argparse.Namespace) -> Config:
    """The :class:`Config` described by the flags of :func:`add_config_arguments`: the
    ``--peer`` preset (``Config()`` or ``Config.for_reference()``) with every flag given
    applied over it (fields whose flag was not given keep the preset's value).

    Raises:
        ValueError: the combination is invalid (the message names the field).
    """
    given = vars(args)
    changes = {
        field.name: given[f"cfg_{field.name}"]
        for field in dataclasses.fields(Config)
        if f"cfg_{field.name}" in given
    }
    preset = PEER_PRESETS[getattr(args, "peer", None) or "mio"]
    if preset is Config:
        return Config(**changes)
    return Config.for_reference(**changes)


# ---------------------------------------------------------------------------- logging
def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    """``-v``/``-q`` (same meaning as in ``mio tunnel``); see :func:`setup_logging`."""
    _clikit.add_logging_arguments(
        parser,
        verbose_help="log more: -v every session, -vv also every stream and mio's protocol details",
    )


def setup_logging(args: argparse.Namespace) -> None:
    """Stdlib logging on stderr: INFO by default, each ``-v`` one level more, each ``-q`` one
    less; the library's own loggers (``mio.session`` ...) show DEBUG only from ``-vv``."""
    _clikit.setup_logging(args, log.name)


# ---------------------------------------------------------------------------- mio echo
async def _echo_main(
    args: argparse.Namespace,
    config: Config,
    *,
    port: int | None = None,
    ready_fd: int | None = None,
    life_fd: int | None = None,
) -> int:
    """One echo server. As a ``--workers`` worker: ``port`` is the reserved port (bound with
    ``reuse_port``) and readiness is one byte on ``ready_fd`` instead of the listening line."""
    import mio

    loop = asyncio.get_running_loop()
    log.info("event loop: %s.%s", type(loop).__module__, type(loop).__qualname__)
    budget = mio.MemoryBudget(args.memory_limit)
    host, listen_port = args.listen
    if port is None:
        port = listen_port
    extra: dict[str, Any] = {"reuse_port": True} if ready_fd is not None else {}
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    counts = {"sessions": 0, "streams": 0, "bytes": 0}
    trace_streams = args.verbose >= 2
    signals = 0

    def on_signal(signame: str) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info("%s: shutting down (again to stop at once)", signame)
            stop.set()
        else:
            log.warning("%s again: closing every session now", signame)
            server.close()

    async def echo(stream: mio.Stream) -> None:
        counts["streams"] += 1
        n = 0
        try:
            async for chunk in stream:
                stream.write(chunk)
                n += len(chunk)
                await stream.drain()
        except mio.MioError as exc:
            if trace_streams:
                log.debug("stream %d ended early: %s", stream.id, exc)
        finally:
            counts["bytes"] += n
        if trace_streams:
            log.debug("stream %d: echoed %d bytes", stream.id, n)

    async def on_session(session: mio.Session) -> None:
        counts["sessions"] += 1
        await asyncio.sleep(0)  # the handler may start before the transport is attached
        peer = session.get_extra_info("peername")
        where = _format_addr(peer) if peer else "?"
        log.debug("session from %s", where)
        await session.wait_closed()
        why = session.close_error
        log.debug("session from %s ended (%s): %s", where, why or "closed", session.stats)

    try:
        server = await mio.serve(
            echo,
            host,
            port,
            config=config,
            session_handler=on_session,
            budget=budget,
            max_sessions=args.max_sessions,
            reuse_address=True,
            backlog=args.backlog,
            **extra,
        )
    except OSError as exc:
        print(f"mio echo: cannot listen on {host or '*'}:{port}: {exc}", file=sys.stderr)
        return 1
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig.name)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
            pass
    try:
        if ready_fd is None:
            for sock in server.sockets:
                print(f"listening on {_format_addr(sock.getsockname())}", flush=True)
        else:
            os.write(ready_fd, b"r")
            os.close(ready_fd)
        if life_fd is not None:

            def parent_gone() -> None:
                loop.remove_reader(life_fd)
                log.warning("the supervising process is gone: shutting down")
                stop.set()

            loop.add_reader(life_fd, parent_gone)
        await stop.wait()
        log.info("closing: waiting up to %g s for open streams", args.grace)
        await server.aclose(timeout=args.grace)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    log.info(
        "stopped: %d sessions, %d streams, %d bytes echoed",
        counts["sessions"],
        counts["streams"],
        counts["bytes"],
    )
    refused = server.stats["refused"]
    if refused:
        log.info("%d connections were refused (over --max-sessions %s)", refused, args.max_sessions)
    return 0


def cmd_echo(args: argparse.Namespace) -> int:
    """``mio echo``."""
    setup_logging(args)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        args._parser.error(str(exc))
    if args.memory_limit < 1:
        args._parser.error("--memory-limit must be positive")
    loop = args.loop
    if loop == "uvloop":
        from ._bench.common import loop_available

        why = loop_available("uvloop")
        if why:
            args._parser.error(why)
    from ._bench.common import run_in_loop

    if args.workers < 1:
        args._parser.error("--workers must be at least 1")
    tune_allocator()  # before the workers fork: they inherit it (see mio._allocator)
    if args.workers > 1:
        return _echo_workers(args, config, loop)
    try:
        return run_in_loop(loop, lambda: _echo_main(args, config))
    except KeyboardInterrupt:  # pragma: no cover - without signal handlers (Windows)
        return 0


def _echo_workers(args: argparse.Namespace, config: Config, loop: str) -> int:
    """``mio echo --workers N``: N pre-forked servers on one ``SO_REUSEPORT`` port."""
    from . import _prefork
    from ._bench.common import run_in_loop

    why = _prefork.available()
    if why:
        args._parser.error(why)
    host, port = args.listen
    try:
        reserved = _prefork.reserve_port(host, port)
    except OSError as exc:
        print(f"mio echo: cannot listen on {host or '*'}:{port}: {exc}", file=sys.stderr)
        return 1
    with reserved:
        bound = reserved.getsockname()

        def worker(index: int, ready_fd: int, life_fd: int) -> int:
            handler = logging.getLogger().handlers[0]
            handler.setFormatter(
                logging.Formatter(
                    f"%(asctime)s %(levelname)s %(name)s [worker {index}]: %(message)s"
                )
            )
            reserved.close()  # the parent holds the reservation
            return run_in_loop(
                loop,
                lambda: _echo_main(args, config, port=bound[1], ready_fd=ready_fd, life_fd=life_fd),
            )

        def on_ready(pids: list[int]) -> None:
            reserved.close()  # every worker listens: the reservation is no longer needed
            print(
                f"listening on {_format_addr(bound)} "
                f"({len(pids)} workers, pids {' '.join(map(str, pids))})",
                flush=True,
            )

        return _prefork.run_workers(args.workers, worker, on_ready=on_ready, log=log.error)


# ---------------------------------------------------------------------------- mio bench
def cmd_bench(args: argparse.Namespace) -> int:
    """``mio bench``."""
    from ._bench import plot, runner, summary

    try:
        settings = runner.settings_from_args(args, args._argv)
    except ValueError as exc:
        args._parser.error(str(exc))
    if args.check and settings.preset != "full":
        args._parser.error("--check needs the full sizes: the verdicts of --quick are indicative")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text("")
        settings.out = args.json
    plan, notes = runner.make_plan(settings)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if not plan:
        print("mio bench: nothing to run (see the notes above)", file=sys.stderr)
        return 1
    progress = runner.Progress(enabled=not args.no_progress)
    print(
        f"mio bench: {len(plan)} runs ({settings.preset} sizes, {settings.rounds} round(s), "
        f"{', '.join(dict.fromkeys(item.loop for item in plan))}); client and server "
        "processes on 127.0.0.1",
        file=sys.stderr,
    )
    result = runner.run_bench(settings, progress)
    progress.finish()
    if args.markdown:
        print(summary.render(result.meta, result.records))
    else:
        print(summary.render_terminal(result.meta, result.records, _columns()))
    if args.plot is not None:
        why = plot.plot(result.meta, result.records, args.plot)
        if why:
            print(f"note: no plot: {why}", file=sys.stderr)
        else:
            print(f"plot written to {args.plot}", file=sys.stderr)
    if args.json is not None:
        print(f"JSON lines written to {args.json}", file=sys.stderr)
    if result.interrupted:
        return 130
    if result.failed:
        print(f"mio bench: {len(result.failed)} run(s) failed (see Notes)", file=sys.stderr)
        return 1
    if args.check:
        misses = summary.missed(result.meta, result.records)
        for miss in misses:
            print(f"mio bench: target {miss}", file=sys.stderr)
        if misses:
            return 3
    return 0


def _columns() -> int:
    """The terminal's width, at most 100 columns (100 when stdout is not a terminal)."""
    import shutil

    return min(100, shutil.get_terminal_size((100, 24)).columns)


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mio",
        description="mio: many flow-controlled byte streams over one connection "
        "(the MIO protocol) for asyncio. Tools: an echo server, an end-to-end benchmark"
        + ", tunnels.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-V",
        "--version",
        action="version",
        version=version_text(),
        help="show the distribution name (mio-mux), its version, whether the compiled "
        "extensions are active, and exit",
    )
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")

    # -- echo
    echo = sub.add_parser(
        "echo",
        help="run an echo server: every stream is echoed until EOF, then closed",
        description=ECHO_DESCRIPTION,
        epilog=ECHO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    echo.add_argument(
        "--listen",
        type=parse_hostport,
        default=("127.0.0.1", 7000),
        metavar="HOST:PORT",
        help="address to listen on: HOST:PORT, [IPv6]:PORT, or :PORT for every "
        "interface (default 127.0.0.1:7000)",
    )
    echo.add_argument(
        "--grace",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, how long open streams may finish (default 5)",
    )
    echo.add_argument(
        "--backlog",
        type=_count,
        default=1024,
        metavar="N",
        help="listen() backlog of the TCP socket (default 1024)",
    )
    echo.add_argument(
        "--workers",
        type=_count,
        default=1,
        metavar="N",
        help="N pre-forked server processes on the same port (SO_REUSEPORT: the kernel "
        "spreads connections over them; each session lives in one worker; Linux/BSD) "
        "(default 1)",
    )
    _clikit.add_loop_argument(echo)
    limits = echo.add_argument_group("server limits")
    limits.add_argument(
        "--max-sessions",
        type=_count_or_off,
        default=DEFAULT_MAX_SESSIONS,
        metavar="N|off",
        help="most sessions at a time; a connection over it gets FIN REFUSED and is closed "
        f"(refusals logged at most every 10 s) (default {DEFAULT_MAX_SESSIONS})",
    )
    limits.add_argument(
        "--memory-limit",
        type=parse_size,
        default=DEFAULT_SERVER_MEMORY,
        metavar="BYTES",
        help="unread inbound data held over all sessions (the server's shared "
        "mio.MemoryBudget); over it every session stops reading until the streams are "
        f"read (default {_human_size(DEFAULT_SERVER_MEMORY)})",
    )
    add_config_arguments(echo)
    add_logging_arguments(echo)
    echo.set_defaults(func=cmd_echo, _parser=echo)

    # -- bench
    from ._bench import runner

    bench = sub.add_parser(
        "bench",
        help="compare mio with raw asyncio TCP, h2 and aioquic on loopback",
        description="End-to-end loopback benchmark (needs: pip install 'mio-mux[bench]'; systems "
        "whose optional dependencies are missing are skipped with a note). Starts one server "
        "and one client process per system and event loop on 127.0.0.1, runs every workload "
        "in rounds (systems interleaved, so each ratio pairs two runs of the same round), "
        "shows progress on stderr and prints a table of medians, min-max and the target "
        "ratios on stdout (the full Markdown report with --markdown). Exit codes: 0 done, "
        "1 a run failed its data checks, 2 bad arguments, 3 (with --check) a target was "
        "missed or could not be measured, 130 interrupted.",
        epilog=runner.catalogue(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    runner.add_common_arguments(bench, loops_flag="--loop")
    bench.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="FILE",
        help="write every run (and the run's metadata) as JSON lines to FILE",
    )
    bench.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="FILE.png",
        help="write a PNG plot (needs matplotlib)",
    )
    bench.add_argument(
        "--markdown",
        action="store_true",
        help="print the full Markdown report (every metric, CPU, notes) instead of the "
        "terminal table",
    )
    bench.add_argument(
        "--check",
        action="store_true",
        help="exit with code 3 when a target is missed or cannot be measured (full sizes "
        "only: the verdicts of --quick are indicative)",
    )
    bench.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    bench.set_defaults(func=cmd_bench, _parser=bench)

    # -- tunnels (mio.tunnel)
    tunnel_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mio`` console script and ``python -m mio``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    args._argv = argv
    return _clikit.run_command(func, args)

"""What every ``mio`` command line shares (``mio echo``/``bench`` and ``mio tunnel``).

* value parsers -- durations, counts, sizes, yes/no, ``HOST:PORT`` -- that raise
  :class:`ValueError` with a message naming the bad value, and :func:`arg_type`, which makes
  an argparse ``type=`` of any of them;
* :func:`add_logging_arguments` / :func:`setup_logging`: ``-v``/``-q`` and stdlib logging on
  stderr, with the same meaning in every command;
* exit statuses and :func:`run_command`, the one mapping from errors to them.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = (
    "EXIT_OK",
    "EXIT_ERROR",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
    "arg_type",
    "parse_seconds",
    "parse_seconds_or_off",
    "parse_count",
    "parse_count_or_off",
    "parse_size",
    "parse_yes_no",
    "parse_hostport",
    "format_address",
    "format_size",
    "add_logging_arguments",
    "setup_logging",
    "usage_error",
    "run_command",
)

#: Success (or a graceful stop by SIGINT/SIGTERM).
EXIT_OK = 0
#: A runtime failure (cannot listen, a run failed).
EXIT_ERROR = 1
#: A bad command line or configuration (argparse uses 2 as well).
EXIT_USAGE = 2
#: Interrupted by Ctrl-C where no signal handler could be installed.
EXIT_INTERRUPTED = 130

T = TypeVar("T")


# ---------------------------------------------------------------------------- value parsers
def arg_type(func: Callable[[str], T], what: str) -> Callable[[str], T]:
    """An argparse ``type=`` from a parser raising :class:`ValueError`: argparse then
    prints the parser's message (``what`` names the value when the message is empty)."""

    def convert(text: str) -> T:
        try:
            return func(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc) or f"invalid {what}: {text!r}") from None

    convert.__name__ = what
    convert.__doc__ = func.__doc__
    return convert


def parse_seconds(text: str, *, positive: bool = False) -> float:
    """A duration in seconds (``0.5``, ``30``); never negative, with ``positive`` not 0."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"invalid number of seconds {text!r}") from None
    if value != value:  # NaN
        raise ValueError(f"invalid number of seconds {text!r}")
    if positive and not value > 0:
        raise ValueError(f"must be a positive number of seconds: {text!r}")
    if value < 0:
        raise ValueError(f"must not be negative: {text!r}")
    return value


def parse_seconds_or_off(text: str) -> float | None:
    """A duration, or ``off``/``none``/``no``/``0`` for None (disabled)."""
    if text.strip().lower() in ("off", "none", "no", "0"):
        return None
    return parse_seconds(text)


def parse_count(text: str, *, minimum: int | None = None) -> int:
    """An integer (``0x`` prefixes allowed), at least ``minimum`` if given."""
    try:
        value = int(text, 0)
    except ValueError:
        raise ValueError(f"invalid integer {text!r}") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"must be at least {minimum}: {text!r}")
    return value


def parse_count_or_off(text: str) -> int | None:
    """A positive integer, or ``off``/``none``/``unlimited`` for None."""
    if text.strip().lower() in ("off", "none", "unlimited"):
        return None
    value = parse_count(text)
    if value < 1:
        raise ValueError("must be positive (or off)")
    return value


_SIZE_RE = re.compile(r"(0x[0-9a-f]+|\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?")
_SIZE_MULT = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """``65536``, ``64K``, ``64KiB``, ``1.5M``, ``0x10000`` -> bytes (K/M/G: powers of 1024)."""
    m = _SIZE_RE.fullmatch(text.strip().lower().replace("_", ""))
    if m is None:
        raise ValueError(f"invalid size {text!r} (examples: 65536, 64K, 1M, 0x10000)")
    number, suffix = m.groups()
    value = int(number, 16) if number.startswith("0x") else float(number)
    size = value * _SIZE_MULT[suffix]
    if size != int(size):
        raise ValueError(f"size {text!r} is not a whole number of bytes")
    return int(size)


def format_size(n: int) -> str:
    """``65536`` -> ``64K`` (exact multiples only), else the number."""
    for unit, size in (("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


_YES = ("yes", "y", "true", "on", "1")
_NO = ("no", "n", "false", "off", "0")


def parse_yes_no(text: str) -> bool:
    """``yes``/``no`` (and ``y``, ``true``, ``on``, ``1`` / ``n``, ``false``, ``off``, ``0``)."""
    word = text.strip().lower()
    if word in _YES:
        return True
    if word in _NO:
        return False
    raise ValueError(f"expected yes or no, got {text!r}")


def parse_hostport(text: str, *, listen: bool = False) -> tuple[str | None, int]:
    """``HOST:PORT`` (IPv6 hosts in brackets) -> ``(host, port)``.

    With ``listen``, the host may be empty (``:8080``: every interface, returned as None)
    and the port may be 0 (the system picks a free port).
    """
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"put IPv6 addresses in brackets, e.g. [::1]:8080 (got {text!r})")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"invalid port in {text!r}") from None
    if not (0 if listen else 1) <= port <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    if not host:
        if not listen:
            raise ValueError(f"missing host in {text!r}")
        return None, port
    return host, port


def format_address(address: object) -> str:
    """``HOST:PORT`` of a socket address tuple (``[HOST]:PORT`` for IPv6), else ``str()``."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        if ":" in str(host):
            return f"[{host}]:{port}"
        return f"{host}:{port}"
    return str(address)


# ---------------------------------------------------------------------------- event loop
def add_loop_argument(group: Any) -> None:
    """``--loop auto|asyncio|uvloop`` (default auto: uvloop where it is installed, as
    uvicorn does), on a parser or an argument group; run the command with
    ``mio._bench.common.run_in_loop(args.loop, ...)`` after checking
    ``loop_available(args.loop)``."""
    group.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="event loop (default: %(default)s, which takes uvloop where it is installed "
        "(pip install 'mio-mux[uvloop]') and asyncio elsewhere; uvloop needs the package)",
    )


# ---------------------------------------------------------------------------- logging
def add_logging_arguments(
    parser: argparse.ArgumentParser,
    *,
    title: str = "logging (stderr)",
    verbose_help: str = "log more: -v every session, -vv also mio's protocol details",
) -> None:
    """``-v``/``--verbose`` and ``-q``/``--quiet``, counted; see :func:`setup_logging`."""
    group = parser.add_argument_group(title)
    group.add_argument("-v", "--verbose", action="count", default=0, help=verbose_help)
    group.add_argument(
        "-q",
        "--quiet",
        action="count",
        default=0,
        help="log less: -q warnings and errors only, -qq errors only",
    )


def setup_logging(args: argparse.Namespace, *own: str) -> None:
    """Stdlib logging on stderr: INFO by default, each ``-v`` one level more, each ``-q``
    one less. The command's ``own`` loggers get that level; the library's (``mio.session``
    ...) and asyncio's show DEBUG only from ``-vv``."""
    verbose = getattr(args, "verbose", 0) or 0
    quiet = getattr(args, "quiet", 0) or 0
    level = max(logging.DEBUG, min(logging.CRITICAL, logging.INFO + 10 * (quiet - verbose)))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    library = level if verbose >= 2 else max(level, logging.INFO)
    logging.getLogger("mio").setLevel(library)
    logging.getLogger("asyncio").setLevel(library)
    for name in own:
        logging.getLogger(name).setLevel(level)


# ---------------------------------------------------------------------------- exit statuses
def usage_error(exc: BaseException, logger: logging.Logger) -> int:
    """Log a configuration error (an :class:`OSError` with its file name) and return
    :data:`EXIT_USAGE`."""
    if isinstance(exc, OSError) and exc.strerror and getattr(exc, "filename", None):
        logger.error("%s: %s", exc.filename, exc.strerror)
    else:
        logger.error("%s", exc)
    return EXIT_USAGE


def run_command(func: Callable[[Any], int | None], args: Any) -> int:
    """Run a command function; Ctrl-C gives :data:`EXIT_INTERRUPTED`, a closed stdout
    (``mio bench | head``) :data:`EXIT_ERROR`."""
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_ERROR

"""Command-line address values: ``HOST:PORT``, ``[IPv6]:PORT`` (from :mod:`mio._clikit`,
shared by every mio command) and ``NAME=HOST:PORT``."""

from __future__ import annotations

import re

from .. import _clikit

__all__ = ("format_address", "parse_hostport", "parse_named", "validate_name")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid service name (1-64 of ``A-Za-z0-9_.-``), else raise."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"invalid service name {name!r}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


parse_hostport = _clikit.parse_hostport


def parse_named(text: str, *, listen: bool = False) -> tuple[str, str | None, int]:
    """Parse ``NAME=HOST:PORT`` into ``(name, host, port)``."""
    name, sep, rest = text.partition("=")
    if not sep:
        raise ValueError(f"expected NAME=HOST:PORT, got {text!r}")
    host, port = parse_hostport(rest, listen=listen)
    return validate_name(name.strip()), host, port


format_address = _clikit.format_address

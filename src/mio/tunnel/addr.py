"""Command-line address values: ``HOST:PORT``, ``[IPv6]:PORT`` and ``NAME=HOST:PORT``."""

from __future__ import annotations

import re

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


def parse_hostport(text: str, *, listen: bool = False) -> tuple[str | None, int]:
    """Parse ``HOST:PORT`` (IPv6 hosts in brackets).

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


def parse_named(text: str, *, listen: bool = False) -> tuple[str, str | None, int]:
    """Parse ``NAME=HOST:PORT`` into ``(name, host, port)``."""
    name, sep, rest = text.partition("=")
    if not sep:
        raise ValueError(f"expected NAME=HOST:PORT, got {text!r}")
    host, port = parse_hostport(rest, listen=listen)
    return validate_name(name.strip()), host, port


def format_address(address: object) -> str:
    """``HOST:PORT`` of a socket address tuple (``[HOST]:PORT`` for IPv6), else ``str()``."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        if ":" in str(host):
            return f"[{host}]:{port}"
        return f"{host}:{port}"
    return str(address)

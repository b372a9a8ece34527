"""Which agents serve which service names, and which of them gets the next connection.

Several agents may serve one name (see docs/TUNNEL.md, "Several agents per name"): each
new connection goes to the next one in turn (round-robin) that is alive and has room; an
agent leaving removes only itself, and a name exists as long as one agent serves it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ("Registry",)

P = TypeVar("P")


class Registry(Generic[P]):
    """Service name -> the agents serving it, in the order they joined."""

    def __init__(self) -> None:
        self._serving: dict[str, list[P]] = {}
        self._turn: dict[str, int] = {}

    def __len__(self) -> int:
        """Names served by at least one agent."""
        return len(self._serving)

    def items(self) -> Iterator[tuple[str, list[P]]]:
        """``(name, agents)`` in name order."""
        for name in sorted(self._serving):
            yield name, list(self._serving[name])

    def join(self, agent: P, name: str) -> int:
        """``agent`` serves ``name`` too; returns how many others already did."""
        serving = self._serving.setdefault(name, [])
        if agent in serving:
            return len(serving) - 1
        serving.append(agent)
        return len(serving) - 1

    def leave(self, agent: P, name: str) -> int | None:
        """``agent`` no longer serves ``name``; returns how many still do (None if it did
        not serve it)."""
        serving = self._serving.get(name)
        if serving is None or agent not in serving:
            return None
        serving.remove(agent)
        if not serving:
            del self._serving[name]
            self._turn.pop(name, None)
        return len(serving)

    def pick(
        self, name: str, alive: Callable[[P], bool], has_room: Callable[[P], bool]
    ) -> tuple[P | None, list[P]]:
        """The next agent for ``name`` that is ``alive`` and ``has_room`` (round-robin),
        or None; and the live agents considered."""
        live = [a for a in self._serving.get(name, ()) if alive(a)]
        turn = self._turn.get(name, 0)
        for i in range(len(live)):
            agent = live[(turn + i) % len(live)]
            if has_room(agent):
                self._turn[name] = (turn + i + 1) % len(live)
                return agent, live
        return None, live

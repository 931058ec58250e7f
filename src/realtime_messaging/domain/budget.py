"""A per-connection budget of events per second.

Why not the ``limits`` library here, as the HTTP API uses: its in-memory storage keeps one key
per identifier forever and sweeps all of them from a timer thread. With a key per socket that
sweep took about half of the server's CPU at 10,000 connections (benchmarks/README.md). A socket's
budget lives and dies with the socket, so it is kept on the socket: two numbers, no thread.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class PerSecond:
    """At most ``limit`` events in any window that starts at an event and lasts one second."""

    limit: int
    window_start: float = float("-inf")
    count: int = 0

    def allow(self, now: float) -> bool:
        """Count one event at monotonic time ``now``; False when it is over the budget."""
        if now - self.window_start >= 1.0:
            self.window_start = now
            self.count = 0
        self.count += 1
        return self.count <= self.limit

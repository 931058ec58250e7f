"""How a broker waits before connecting again: the same for Redis and PostgreSQL."""

from __future__ import annotations

import random


class Backoff:
    """Capped exponential backoff with jitter: 0.05 s doubling to ``cap`` (each delay drawn
    between half and all of its step, so that processes do not retry in step)."""

    def __init__(self, cap: float) -> None:
        self._cap = cap
        self._step = 0.05

    def reset(self) -> None:
        self._step = 0.05

    def next(self) -> float:
        step = self._step
        self._step = min(self._cap, step * 2)
        return random.uniform(step / 2, step)

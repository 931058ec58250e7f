"""What every broker does with an envelope another process published: hand it to the sink.

The same for Redis, Redis Cluster and PostgreSQL: a process reads its own publications back
(Redis sends them to every subscriber of the channel, the PostgreSQL broker reads every row) and
skips them by node id, as they were delivered here when published; a malformed one is counted,
and logged at the first and every thousandth, so a stream of them cannot flood the log; an
envelope the sink fails on is logged and the next one goes on, so a bug in delivering one never
cuts a subscription or stops a reader.
"""

from __future__ import annotations

import logging

from . import Sink
from .wire import decode, published_by

log = logging.getLogger(__name__)


class Inbound:
    """The envelopes one process received from the others, and their counts."""

    __slots__ = ("_node", "received", "malformed")

    def __init__(self, node: bytes) -> None:
        self._node = node
        #: Envelopes of other processes, handed to the sink (or dropped once it has gone).
        self.received = 0
        #: What could not be decoded.
        self.malformed = 0

    def relay(self, sink: Sink | None, data: bytes, *, control: bool) -> None:
        """Hand ``data`` (an encoded envelope, :mod:`.wire`) to ``sink``: to ``control`` when
        it came on a control channel, else to ``deliver``."""
        if published_by(data, self._node):
            return
        try:
            node, envelope = decode(data)
        except ValueError as exc:
            self.malformed += 1
            if self.malformed == 1 or self.malformed % 1000 == 0:
                log.warning("skipped %d malformed broker message(s): %s", self.malformed, exc)
            return
        if node == self._node:
            return
        self.received += 1
        if sink is None:
            return
        try:
            if control:
                sink.control(envelope)
            else:
                sink.deliver(envelope)
        except Exception:
            log.exception("error delivering a broker message on %s", envelope.topic)

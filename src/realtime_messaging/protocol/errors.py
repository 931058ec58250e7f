"""Errors of the protocol core.

ProtocolError        the peer sent something the protocol does not allow (reply or close)
"""


class ProtocolError(Exception):
    """The peer broke the protocol; the message is safe to send back to it."""

"""What the endpoint counts, read from ``/metrics`` as a client would."""

from __future__ import annotations

import re

import aiohttp


async def socket_errors(http_url: str, kind: str) -> float:
    """``rtm_socket_errors_total`` of one kind (0 before the first)."""
    async with aiohttp.ClientSession() as session:
        async with session.get(http_url + "/metrics") as response:
            text = await response.text()
    found = re.search(rf'^rtm_socket_errors_total\{{kind="{kind}"\}} (\S+)$', text, re.M)
    return float(found[1]) if found else 0.0

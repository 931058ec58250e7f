"""Usage example 4, a conversation header showing whether the customer is online.

A staff user watches the presence of the conversation's customer while being online
themselves (``PresenceHelper``: online now, offline on exit). Stops when the customer goes
offline (or after ``--seconds``). Run it with a staff token:

    RTM_ACCESS_TOKEN=$STAFF_TOKEN python examples/presence.py
"""

from __future__ import annotations

import argparse
import asyncio
import os

from realtime_messaging import get_realtime_manager
from realtime_messaging.client import PresenceEvent, PresenceHelper


async def main(seconds: float) -> None:
    conversation_id = os.environ["RTM_CONVERSATION_ID"]
    customer_id = os.environ["RTM_CUSTOMER_ID"]
    manager = get_realtime_manager()
    left = asyncio.Event()

    def on_presence(presence: PresenceEvent) -> None:
        if presence.customer_id == customer_id:
            print(f"customer is {presence.status}")
            if presence.status == "offline":
                left.set()

    async with manager:
        await manager.subscribe_to_presence(conversation_id, on_presence=on_presence)
        async with PresenceHelper(manager):  # call .activity() on input in a real UI
            online = await manager.is_online(conversation_id, customer_id=customer_id)
            print(f"customer online: {'yes' if online else 'no'}")
            try:
                await asyncio.wait_for(left.wait(), seconds)
            except TimeoutError:
                print(f"still here after {seconds:g} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="give up after this long")
    asyncio.run(main(parser.parse_args().seconds))

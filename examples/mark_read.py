"""Usage example 3, marking the messages a customer has seen as read.

Staff messages arriving in the conversation are "seen" (a real UI would wait until they are on
screen); ``ReadTracker`` marks them read in batches. Stops after ``--messages`` of them and
prints the unread count before and after. Run it with a portal token:

    RTM_ACCESS_TOKEN=$CUSTOMER_TOKEN python examples/mark_read.py --messages 3
"""

from __future__ import annotations

import argparse
import asyncio
import os

from realtime_messaging import get_realtime_manager
from realtime_messaging.client import MessageEvent, ReadTracker


async def main(count: int, seconds: float) -> None:
    conversation_id = os.environ["RTM_CONVERSATION_ID"]
    manager = get_realtime_manager()
    seen: list[str] = []
    enough = asyncio.Event()
    async with manager, ReadTracker(manager) as reads:

        def on_message(message: MessageEvent) -> None:
            if message.sender_type != "staff":
                return  # never mark your own messages read
            print(f"seen: {message.content}")
            seen.append(message.id)
            reads.add(message.id)
            if len(seen) >= count:
                enough.set()

        await manager.subscribe_to_conversation(conversation_id, on_message=on_message)
        print(f"unread: {await manager.get_unread_count()}")
        try:
            await asyncio.wait_for(enough.wait(), seconds)
        except TimeoutError:
            print(f"only {len(seen)} messages within {seconds:g} s")
        await reads.flush()
        print(f"marked {len(reads.marked)} messages read")
        print(f"unread: {await manager.get_unread_count()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3, help="stop after this many")
    parser.add_argument("--seconds", type=float, default=120.0, help="give up after this long")
    args = parser.parse_args()
    asyncio.run(main(args.messages, args.seconds))

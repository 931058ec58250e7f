"""Usage example 1, the customer portal's chat, in a terminal.

Prints every message of the customer's conversations, whether staff are typing, and read
receipts, until the first staff reply (or ``--seconds``). Run it with a portal token:

    RTM_ACCESS_TOKEN=$CUSTOMER_TOKEN python examples/customer_chat.py
"""

from __future__ import annotations

import argparse
import asyncio
import os

from realtime_messaging import get_realtime_manager
from realtime_messaging.client import MessageEvent, ReadReceiptEvent, TypingIndicatorEvent


async def main(seconds: float) -> None:
    customer_id = os.environ["RTM_CUSTOMER_ID"]
    manager = get_realtime_manager()
    typing_users: set[str] = set()
    replied = asyncio.Event()

    def on_message(message: MessageEvent) -> None:
        print(f"{message.sender_type}: {message.content}")
        if message.sender_type == "staff":
            replied.set()

    def on_typing(indicator: TypingIndicatorEvent) -> None:
        if indicator.user_id is None:
            return  # the customer's own indicator
        was_typing = bool(typing_users)
        if indicator.is_typing:
            typing_users.add(indicator.user_id)
        else:
            typing_users.discard(indicator.user_id)
        if bool(typing_users) != was_typing:
            print("someone is typing..." if typing_users else "nobody is typing")

    def on_read_receipt(receipt: ReadReceiptEvent) -> None:
        print(f"message {receipt.message_id} was read")

    async with manager:  # closing it unsubscribes from everything
        await manager.subscribe_to_customer_messages(
            customer_id, on_message=on_message, on_typing=on_typing, on_read_receipt=on_read_receipt
        )
        print(f"listening as customer {customer_id}")
        try:
            await asyncio.wait_for(replied.wait(), seconds)
        except TimeoutError:
            print(f"no reply within {seconds:g} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="give up after this long")
    asyncio.run(main(parser.parse_args().seconds))

"""Usage example 6, a message that shows when it was delivered and read.

The customer sends ``--text`` and prints its delivery status as it changes, then "✓✓ Read"
when staff read it (or gives up after ``--seconds``). Delivery status is tracked for the
conversation's assigned staff user. Run it with a portal token:

    RTM_ACCESS_TOKEN=$CUSTOMER_TOKEN python examples/read_receipts.py --text "Is it shipped?"
"""

from __future__ import annotations

import argparse
import asyncio
import os

from realtime_messaging import get_realtime_manager
from realtime_messaging.client import DeliveryStatusEvent, ReadReceiptEvent


async def main(text: str, seconds: float) -> None:
    conversation_id = os.environ["RTM_CONVERSATION_ID"]
    customer_id = os.environ["RTM_CUSTOMER_ID"]
    manager = get_realtime_manager()
    # Changes can arrive before the answer to the send: the handlers wait for its id.
    sent: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    read = asyncio.Event()

    async def on_delivery_status(status: DeliveryStatusEvent) -> None:
        if status.message_id == await sent and status.status != "read":
            print(f"✓ {status.status}")

    async def on_read_receipt(receipt: ReadReceiptEvent) -> None:
        if receipt.message_id == await sent:
            print("✓✓ Read")
            read.set()

    async with manager:
        await manager.subscribe_to_customer_messages(
            customer_id, on_delivery_status=on_delivery_status, on_read_receipt=on_read_receipt
        )
        message = await manager.send_message(conversation_id, text)
        sent.set_result(message["id"])
        print(f"sent: {message['content']} (id {message['id']})")
        try:
            await asyncio.wait_for(read.wait(), seconds)
        except TimeoutError:
            print(f"not read within {seconds:g} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", default="Has my order shipped?")
    parser.add_argument("--seconds", type=float, default=120.0, help="give up after this long")
    args = parser.parse_args()
    asyncio.run(main(args.text, args.seconds))

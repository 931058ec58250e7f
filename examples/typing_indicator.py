"""Usage example 2, a message input that tells the other side you are typing.

Types ``--text`` one key every ``--delay`` seconds, then sends it. ``TypingHelper`` turns the
keystrokes into a few requests: typing starts with the first key, is refreshed while keys keep
coming, stops after 3 s without one, and stops when the message is sent.

    RTM_ACCESS_TOKEN=$CUSTOMER_TOKEN python examples/typing_indicator.py --text "Where is my order?"
"""

from __future__ import annotations

import argparse
import asyncio
import os

from realtime_messaging import get_realtime_manager
from realtime_messaging.client import TypingHelper


async def main(text: str, delay: float) -> None:
    conversation_id = os.environ["RTM_CONVERSATION_ID"]
    manager = get_realtime_manager()
    async with manager, TypingHelper(manager, conversation_id) as typing:
        print(f"typing {len(text)} keys")
        for _ in text:
            typing.keystroke()  # on every key: cheap, the helper decides what to send
            await asyncio.sleep(delay)  # the user's next key
        message = await typing.send(text)  # sending stops the indicator too
        print(f"sent: {message['content']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", default="Hello, I need help with my order")
    parser.add_argument("--delay", type=float, default=0.15, help="seconds between keys")
    args = parser.parse_args()
    asyncio.run(main(args.text, args.delay))

"""Usage example 5, a staff dashboard with a live unread count.

Shows the staff user's unread count, and again whenever a message or a read receipt changes
it; stops after ``--updates`` changes (or ``--seconds``). Run it with a staff token:

    RTM_ACCESS_TOKEN=$STAFF_TOKEN python examples/staff_dashboard.py
"""

from __future__ import annotations

import argparse
import asyncio
import os

from realtime_messaging import get_realtime_manager
from realtime_messaging.client import Event


async def main(updates: int, seconds: float) -> None:
    user_id = os.environ["RTM_USER_ID"]
    manager = get_realtime_manager()
    shown: list[int] = []
    done = asyncio.Event()

    async def refresh(_: Event | None = None) -> None:
        count = await manager.get_unread_count(user_id)
        if not shown or count != shown[-1]:
            shown.append(count)
            print(f"Messages ({count} unread)")
        if len(shown) > updates:
            done.set()

    async with manager:
        await manager.subscribe_to_staff_messages(
            user_id, on_message=refresh, on_read_receipt=refresh
        )
        await refresh()  # after subscribing, so that no change falls in between
        try:
            await asyncio.wait_for(done.wait(), seconds)
        except TimeoutError:
            print(f"{len(shown) - 1} updates within {seconds:g} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=10, help="stop after this many changes")
    parser.add_argument("--seconds", type=float, default=120.0, help="give up after this long")
    args = parser.parse_args()
    asyncio.run(main(args.updates, args.seconds))

"""``python -m realtime_messaging`` is ``rtm``."""

from .cli import main

main()

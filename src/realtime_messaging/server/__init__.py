"""The HTTP and WebSocket server (aiohttp)."""

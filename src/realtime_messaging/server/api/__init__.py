"""The messaging HTTP API: JSON in camelCase, the ``{success, version, timestamp, data}`` envelope."""

"""A real S3-compatible server for the S3 store: moto's standalone server on loopback."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from realtime_messaging.storage import S3Config, S3Storage


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The URL of a moto server (S3 API over HTTP) for this test run."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_config(endpoint: str, bucket: str, *, part_size: int = 5 * 1024 * 1024) -> S3Config:
    return S3Config(
        bucket=bucket,
        endpoint_url=endpoint,
        region="us-east-1",
        access_key_id="test",
        secret_access_key="test",
        prefix="rtm/",
        part_size=part_size,
    )


@pytest.fixture
async def s3_store(s3_endpoint: str) -> AsyncIterator[S3Storage]:
    """An S3 store on a fresh bucket."""
    store = S3Storage(s3_config(s3_endpoint, f"rtm-{uuid.uuid4().hex[:12]}"))
    await store.start()
    await store.client.create_bucket(Bucket=store.config.bucket)
    try:
        yield store
    finally:
        await store.close()

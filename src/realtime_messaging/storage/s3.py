"""Attachments in an S3-compatible object store (AWS S3, MinIO, Ceph, R2, ...), through
aiobotocore: botocore's maintained request signing and retries on aiohttp, the HTTP library the
server already runs on (docs/files.md says why not another client).

Memory stays bounded by one part: a stream that fits in ``part_size`` is one PutObject, a
longer one a multipart upload sent part by part, aborted when it fails or grows too large.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from .base import NotStored, StorageError, TooLarge, check_key

#: S3's smallest part (except the last); parts are this size unless configured larger.
MIN_PART_SIZE = 5 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class S3Config:
    """Where and how to reach the bucket (``RTM_S3_*``, docs/files.md)."""

    bucket: str
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    #: Prepended to every key, to share a bucket with other data.
    prefix: str = ""
    #: Path-style URLs (``endpoint/bucket/key``), which most self-hosted stores need.
    path_style: bool = True
    part_size: int = 8 * 1024 * 1024


class S3Storage:
    """One client for the process, opened by :meth:`start`."""

    def __init__(self, config: S3Config) -> None:
        if config.part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        self.config = config
        self._stack = AsyncExitStack()
        self._client: Any = None

    async def start(self) -> None:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        config = AioConfig(
            s3={"addressing_style": "path" if self.config.path_style else "auto"},
            signature_version="s3v4",
            retries={"max_attempts": 3, "mode": "standard"},
        )
        self._client = await self._stack.enter_async_context(
            get_session().create_client(
                "s3",
                endpoint_url=self.config.endpoint_url,
                region_name=self.config.region or "us-east-1",
                aws_access_key_id=self.config.access_key_id,
                aws_secret_access_key=self.config.secret_access_key,
                config=config,
            )
        )

    def _key(self, key: str) -> str:
        return self.config.prefix + check_key(key)

    @property
    def client(self) -> Any:
        if self._client is None:
            raise StorageError("the S3 store is not started")
        return self._client

    async def put(self, key: str, chunks: AsyncIterator[bytes], *, max_bytes: int) -> int:
        from botocore.exceptions import BotoCoreError, ClientError

        name = self._key(key)
        bucket = self.config.bucket
        part_size = self.config.part_size
        buffer = bytearray()
        size = 0
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge(max_bytes)
                buffer += chunk
                while len(buffer) >= part_size:
                    if upload_id is None:
                        started = await self.client.create_multipart_upload(Bucket=bucket, Key=name)
                        upload_id = started["UploadId"]
                    part = bytes(buffer[:part_size])
                    del buffer[:part_size]
                    number = len(parts) + 1
                    sent = await self.client.upload_part(
                        Bucket=bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=part
                    )
                    parts.append({"PartNumber": number, "ETag": sent["ETag"]})
            if upload_id is None:
                await self.client.put_object(Bucket=bucket, Key=name, Body=bytes(buffer))
                return size
            if buffer or not parts:
                number = len(parts) + 1
                sent = await self.client.upload_part(
                    Bucket=bucket,
                    Key=name,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=bytes(buffer),
                )
                parts.append({"PartNumber": number, "ETag": sent["ETag"]})
            await self.client.complete_multipart_upload(
                Bucket=bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
            upload_id = None
            return size
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"the object store refused the upload: {exc}") from exc
        finally:
            if upload_id is not None:
                try:
                    await self.client.abort_multipart_upload(
                        Bucket=bucket, Key=name, UploadId=upload_id
                    )
                except (BotoCoreError, ClientError):
                    pass  # the bucket's lifecycle rule for incomplete uploads cleans up

    async def open(self, key: str, *, chunk_size: int = 64 * 1024) -> AsyncGenerator[bytes, None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            reply = await self.client.get_object(Bucket=self.config.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise NotStored(key) from exc
            raise StorageError(str(exc)) from exc
        except BotoCoreError as exc:
            raise StorageError(str(exc)) from exc
        async with reply["Body"] as body:
            while chunk := await body.read(chunk_size):
                yield chunk

    async def url(
        self, key: str, *, expires_in: int, disposition: str, content_type: str
    ) -> str | None:
        url: str = await self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.config.bucket,
                "Key": self._key(key),
                "ResponseContentDisposition": disposition,
                "ResponseContentType": content_type,
            },
            ExpiresIn=expires_in,
        )
        return url

    async def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            await self.client.delete_object(Bucket=self.config.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(str(exc)) from exc

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None

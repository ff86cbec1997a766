"""Where claim-checked payloads and results live when not in Redis.

By default (no store) a payload or result above the queue's blob threshold goes into a
string key of its own in the task's slot, written and deleted by the scripts in the same
atomic step as the task (keys.QueueKeys.blob). A `BlobStore` given to the queue takes
them instead (an object store, a shared disk): the client puts a blob there before the
script that references it, reads it back after a claim or a get_task, and deletes it after
the task is deleted: the deleting scripts queue its key (`blob_gc`) and the client that
ran them, or any later `collect_blobs()`, deletes it from the store. A blob put for an
enqueue or a completion that then fails stays in the store until the same key is put
again; the store's keys are the Redis key names the blobs would have had.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import quote

__all__ = ["BlobStore", "DirectoryBlobStore"]


@runtime_checkable
class BlobStore(Protocol):
    """A place for blobs, by key. `get` of a key never put (or deleted) is None; `delete`
    of a missing key is not an error."""

    async def put(self, key: str, data: bytes) -> None: ...

    async def get(self, key: str) -> bytes | None: ...

    async def delete(self, keys: Sequence[str]) -> None: ...


class DirectoryBlobStore:
    """A BlobStore in a directory, one file per blob (written to a temporary name, then
    renamed, so a reader never sees half of one). For one host or a shared volume."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def _file(self, key: str) -> Path:
        name = quote(key, safe="")
        if len(name) > 200:  # file names stop at 255 bytes: a long key goes by its hash
            name = hashlib.sha256(key.encode()).hexdigest()
        return self.path / name

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, key, data)

    def _put(self, key: str, data: bytes) -> None:
        target = self._file(key)
        partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        partial.write_bytes(data)
        partial.replace(target)

    async def get(self, key: str) -> bytes | None:
        try:
            return await asyncio.to_thread(self._file(key).read_bytes)
        except FileNotFoundError:
            return None

    async def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._file(key).unlink(missing_ok=True)

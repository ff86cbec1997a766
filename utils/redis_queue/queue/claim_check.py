"""Claim-check through a user-supplied BlobStore (blobs.py): what the client does around
the scripts when the queue has one. Without a store the scripts do it all (the blob keys)
and none of this runs."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from .. import codec
from ..keys import BLOB_NAMES, QueueKeys
from ..new_task import NewTask
from ..scripts import BlobMode
from .client import QueueClient

__all__ = ["collect_partition", "collect_quietly", "fetch_blobs", "put_payloads", "stored_result"]

log = logging.getLogger("agentic.queue")

COLLECT_BATCH = 500  # blob keys taken from a partition's blob_gc list per round trip


async def put_payloads(client: QueueClient, tasks: list[NewTask]) -> list[NewTask]:
    """Each claim-checked task with its payload put in the store (all at once), and the
    reference ("<size>:<key>") enqueue.lua records."""
    store = client.blob_store
    if store is None or not any(t.blob for t in tasks):
        return tasks
    out = list(tasks)
    puts = []
    for i, t in enumerate(tasks):
        if t.blob:
            key = client.keys_for(t.task_id).blob(t.task_id, "payload")
            puts.append(store.put(key, t.payload_text.encode()))
            out[i] = dataclasses.replace(t, blob_ref=f"{len(t.payload_text)}:{key}")
    await asyncio.gather(*puts)
    return out


async def stored_result(client: QueueClient, task_id: str, text: str) -> tuple[str, BlobMode]:
    """A result's JSON as a completion sends it, and where it goes: in the hash, its blob
    key, or (put there now) the queue's store, the text then being its reference."""
    if len(text) <= client.blob_threshold_bytes:
        return text, ""
    if client.blob_store is None:
        return text, "key"
    key = client.keys_for(task_id).blob(task_id, "result")
    await client.blob_store.put(key, text.encode())
    return f"{len(text)}:{key}", "ext"


async def fetch_blobs(client: QueueClient, task_id: str, fields: dict[str, str]) -> None:
    """Puts back into `fields` the payload and result a store holds for it (`<name>.ext`
    names the key); one missing stays missing (decode_task calls the record corrupt)."""
    store = client.blob_store
    wanted = [n for n in BLOB_NAMES if f"{n}.ext" in fields and n not in fields]
    if store is None or not wanted:
        return
    values = await asyncio.gather(*(store.get(fields[f"{n}.ext"]) for n in wanted))
    for name, value in zip(wanted, values, strict=True):
        if value is not None:
            fields[name] = value.decode()


async def collect_partition(client: QueueClient, keys: QueueKeys) -> int:
    """Deletes from the store the blobs of the partition's deleted tasks (queued by the
    scripts in `blob_gc`); returns how many keys were taken."""
    store = client.blob_store
    if store is None:
        return 0
    total = 0
    while True:
        async with client._command():
            taken: Any = await client.redis.lpop(keys.blob_gc, COLLECT_BATCH)
        if not taken:
            return total
        names = [codec.as_text(k) for k in taken]
        try:
            await store.delete(names)
        except BaseException:
            async with client._command():  # back in the list, for the next collection
                await client.redis.rpush(keys.blob_gc, *names)
            raise
        total += len(taken)
        if len(taken) < COLLECT_BATCH:
            return total


async def collect_quietly(client: QueueClient, keys: QueueKeys) -> None:
    """collect_partition after a settle: a store that fails is logged, not the settle's
    failure (the keys went back to the list for the next collection)."""
    if client.blob_store is None:
        return
    try:
        await collect_partition(client, keys)
    except Exception as exc:
        log.warning("deleting blobs of deleted tasks from the blob store failed: %s", exc)

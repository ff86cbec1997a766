"""Security (issue case 13): an ACL user limited to the queue's keys and channel works end
to end; a user without rights gets a clear NOPERM error; rediss:// to a TLS redis-server
started here; the payload and result size limits hold for worker processes too."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.fault_servers import FaultRedis
from tests.support.ledger import Ledger
from tests.support.redis_server import free_port
from utils.redis_queue import PayloadTooLarge, QueueError

Factory = Callable[..., Any]
pytestmark = pytest.mark.timeout(60)


async def test_acl_user_limited_to_the_queue_prefix_runs_the_whole_queue(
    fault_redis: FaultRedis, queue_factory: Factory, workers_factory: Factory
) -> None:
    admin = await fault_redis.client()
    rules = ["on", ">s3cret", "~agentic:{acl}:*", "&agentic:{acl}:*", "+@all", "-@dangerous"]
    await admin.acl_setuser("queue", reset=True, **_acl(rules))
    await admin.acl_setuser("stranger", reset=True, **_acl(["on", ">pw", "~other:*", "+@all"]))
    await admin.aclose()
    port = fault_redis.port
    limited = FaultRedisURL(f"redis://queue:s3cret@127.0.0.1:{port}/0")
    q = await queue_factory(limited, queue_name="acl")
    await q.enqueue("a", "work", {"ms": 1})
    workers = workers_factory(limited, queue_name="acl")
    workers.start()  # claims, heartbeats (its lease keeper), pub/sub, registry, settle
    assert (await q.wait_for_result("a", timeout=20))["attempt"] == 1
    assert await workers.stop_all() == [0]

    stranger = FaultRedisURL(f"redis://stranger:pw@127.0.0.1:{port}/0")
    with pytest.raises(QueueError, match="NOPERM") as refused:  # at connect (the layout read)
        outsider = await queue_factory(stranger, queue_name="acl")
        await outsider.enqueue("b", "work", {})
    assert "denied" in str(refused.value) and "***" in str(refused.value)  # password masked
    assert "pw@" not in str(refused.value)


async def test_rediss_tls_connection_to_a_tls_redis_server(
    redis_factory: Factory, queue_factory: Factory, workers_factory: Factory, tmp_path: Path
) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl binary to make a certificate")
    ca, cert, key = _certificates(tmp_path)
    tls_port = free_port()
    args = ["--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file",
            str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"]  # fmt: skip
    try:
        server = redis_factory("none", *args)
    except RuntimeError as exc:
        if "tls" in str(exc).lower() or "Bad directive" in str(exc):
            binary = Path(str(exc).split(" exited", 1)[0]).name
            pytest.skip(f"{binary} was built without TLS (it refuses --tls-port)")
        raise
    tls = FaultRedisURL(f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={ca}")
    assert server.port != tls_port
    q = await queue_factory(tls, queue_name="tls")
    await q.enqueue("t", "work", {"ms": 1})
    workers = workers_factory(tls, queue_name="tls")
    workers.start()
    assert (await q.wait_for_result("t", timeout=20))["attempt"] == 1
    assert await workers.stop_all() == [0]


async def test_payload_and_result_size_limits_hold_in_worker_processes(
    fault_redis: FaultRedis, queue_factory: Factory, workers_factory: Factory, ledger: Ledger
) -> None:
    q = await queue_factory(fault_redis, max_payload_bytes=1024)
    with pytest.raises(PayloadTooLarge):
        await q.enqueue("big", "work", {"pad": "x" * 2000})
    assert await q.get_task("big") is None  # refused before Redis
    await q.enqueue("big-result", "work", {"result_bytes": 4096})
    await q.enqueue("fine", "work", {})
    workers = workers_factory(fault_redis)
    workers.start(FAULT_MAX_PAYLOAD_BYTES="1024")
    assert (await q.wait_for_result("fine", timeout=20))["attempt"] == 1
    with pytest.raises(QueueError, match="the limit is 1024"):
        await q.wait_for_result("big-result", timeout=20)
    task = await q.get_task("big-result")
    assert task is not None and task.state == "dead_letter"
    assert await workers.stop_all() == [0]


class FaultRedisURL:
    """Stands in for a FaultRedis where only a URL is needed (another user, TLS)."""

    def __init__(self, url: str) -> None:
        self.url = url


def _acl(rules: list[str]) -> dict[str, Any]:
    """acl_setuser keyword arguments for rules written as in ACL SETUSER."""
    return {
        "enabled": "on" in rules,
        "passwords": [f"+{r[1:]}" for r in rules if r.startswith(">")],
        "keys": [r[1:] for r in rules if r.startswith("~")],
        "channels": [r[1:] for r in rules if r.startswith("&")],
        "commands": [r for r in rules if r[0] in "+-"],
    }


def _certificates(root: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1, made with openssl."""
    ca, ca_key = root / "ca.crt", root / "ca.key"
    cert, key, csr, ext = root / "server.crt", root / "server.key", root / "s.csr", root / "ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out",
        str(ca), "-days", "1", "-subj", "/CN=agentic-test-ca")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=127.0.0.1")  # fmt: skip
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "1", "-extfile", str(ext))  # fmt: skip
    return ca, cert, key

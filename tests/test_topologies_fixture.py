"""The Cluster and Sentinel fixtures do what later tests rely on: a real topology whose
roles move when a test fails it over, kills or reshards it, and only then return."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel

from tests.support.topologies import ClusterGroup, SentinelGroup, ask

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterGroup]:
    with ClusterGroup() as group:
        yield group


@pytest.fixture(scope="module")
def ha() -> Iterator[SentinelGroup]:
    with SentinelGroup() as group:
        yield group


def slot_count(group: ClusterGroup, port: int) -> int:
    total = 0
    for span in group.view()[port].slots:
        first, _, last = span.partition("-")
        total += int(last or first) - int(first) + 1
    return total


def test_cluster_has_three_primaries_owning_slots(cluster: ClusterGroup) -> None:
    primaries = cluster.primaries()
    assert len(primaries) == 3 and len(cluster.ports) == 6
    assert sum(slot_count(cluster, port) for port in primaries) == 16384
    assert all(slot_count(cluster, port) > 0 for port in primaries)
    assert all(len(cluster.replicas_of(port)) == 1 for port in primaries)


def test_cluster_client_reads_back_and_failover_swaps_roles(cluster: ClusterGroup) -> None:
    client = RedisCluster(host="127.0.0.1", port=cluster.ports[0], decode_responses=True)
    try:
        client.set("topo:key", "v")
        assert client.get("topo:key") == "v"
        owner = cluster.node_for_key("topo:key")
        replica = cluster.replicas_of(owner)[0]
        cluster.failover(replica)
        assert cluster.node_for_key("topo:key") == replica
        assert replica in cluster.primaries() and cluster.replicas_of(replica) == [owner]
        assert client.get("topo:key") == "v"  # the client follows the MOVED
    finally:
        client.close()


def test_cluster_kill_restart_and_reshard(cluster: ClusterGroup) -> None:
    victim = cluster.node_for_key("topo:key")
    promoted = cluster.kill_primary(victim)
    assert victim not in cluster.primaries() and promoted in cluster.primaries()
    assert cluster.node_for_key("topo:key") == promoted
    assert ask(promoted, "GET", "topo:key") == "v"
    cluster.restart(victim)
    assert cluster.replicas_of(promoted) == [victim]
    source, target = (port for port in cluster.primaries() if port != promoted)
    before = slot_count(cluster, target)
    cluster.reshard(source, target, 10)
    assert slot_count(cluster, target) == before + 10


def sentinel_client(ha: SentinelGroup) -> tuple[Sentinel, str]:
    """A redis-py Sentinel client from the group's url, as an app would build one."""
    hosts, name, db = ha.url.removeprefix("sentinel://").split("/")
    addresses = [(host, int(port)) for host, port in (h.split(":") for h in hosts.split(","))]
    assert (name, db) == (ha.master_name, "0")
    client = Sentinel(addresses, socket_timeout=2, decode_responses=True)  # type: ignore[no-untyped-call]
    return client, name


def master_address(sentinels: Sentinel, name: str) -> tuple[str, int]:
    address: tuple[str, int] = sentinels.discover_master(name)  # type: ignore[no-untyped-call]
    return address


def test_sentinel_url_primary_answers_and_failover_moves_it(ha: SentinelGroup) -> None:
    sentinels, name = sentinel_client(ha)
    primary = sentinels.master_for(name, socket_timeout=2)  # type: ignore[no-untyped-call]
    try:
        old = ha.primary_port()
        assert master_address(sentinels, name) == ("127.0.0.1", old)
        primary.set("topo:key", "v")
        assert ask(old, "ROLE")[0] == "master" and len(ha.replica_ports()) == 2
        new = ha.failover()
        assert new != old and ha.primary_port() == new and ask(new, "ROLE")[0] == "master"
        assert master_address(sentinels, name) == ("127.0.0.1", new)
        assert primary.get("topo:key") == "v"
    finally:
        primary.close()
        for client in sentinels.sentinels:
            client.close()


def test_sentinel_kill_primary_and_restart(ha: SentinelGroup) -> None:
    old = ha.primary_port()
    new = ha.kill_primary()
    assert new != old and ask(new, "ROLE")[0] == "master"
    assert ask(new, "GET", "topo:key") == "v"
    ha.restart(old)
    assert ask(old, "ROLE")[:2] == ["slave", "127.0.0.1"] and old in ha.replica_ports()

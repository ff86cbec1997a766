"""The scenarios queue_bench.py runs, by key, in run order; the raw redis-py baselines
they compare with are in baselines.py.

    enqueue    A  enqueue() one at a time, B  enqueue_many() in chunks
    sync_enqueue  S  A for synchronous code: SyncRedisTaskQueue.enqueue() against sync LPUSH
    seed_loop  C0 the seed loop draining a queue, E0 round trips through it in a process
    workers    C, D  `agentic worker` processes draining a queue, E  round trips through one
    memory     F  used_memory per pending task
    flow       H  C with limits configured but not binding (0, 1, 3, 10 keys per task)
    cluster    G  one workload on one Redis and on a 3-primary cluster (1 and 6 partitions):
               enqueue, drain, Redis CPU per primary, durable enqueue, rank error
               (cluster_enqueue, cluster_layouts: its streams and drains)
    dashboard  I  `agentic dashboard` over a queue of 100,000 tasks: each page's latency,
               and the Redis load of one idle browser (headless Chromium)
    wide       J  a pipeline run's overhead per dev subtask as it gets wider (10 to 2,000)
    model      K  64 dev subtasks against a 1-s local model provider, one worker at -c 8,
               32 and 64: model-bound throughput against concurrency
    task_types M  claim 10 + settle against 1 to 1,000 pending task types, 10,000 registered
               with few pending, and pending depth (issue 18's "scenario I")
    sandbox    L  the sandbox's cost per QA run: median of 20, bubblewrap vs the unshare
               fallback vs none
    payload_memory   N  memory per pending task from 1 KiB to 10 MiB payloads, inline and
               claim-checked, against a bare hash; one 10 MiB enqueue and get_task
    output_streams   O  ctx.emit() one by one and concurrent, emit -> reader latency and
               stream memory, against raw XADD / XREAD
    pause_schedules  P  pause/resume seen by 3 `agentic worker` processes; a scheduler
               step idle and with 1,000 schedules due
    enqueue_windows  Q  enqueue() with unique_for / debounce against plain enqueue()
    sustained  T  issue 18's "scenario H", a bounded soak: 80% of the C rate for 10 minutes
               into one `agentic worker`, latency, used_memory and worker RSS per window

G starts a Redis Cluster of its own (6 servers), I a browser (~5 min), J runs of up
to 2,000 subtasks (~2 min) and K a model provider (~20 s): they run only when asked
(--scenarios G, I, J, K); M (~1 min) and L (~1 min, QA 63 times) too, and N (~30 s,
~1 GB of 10 MiB payloads through Redis), O (~15 s), P (~20 s, 3 worker processes) and
Q (~10 s), which measure single features the README quotes, and T (--soak-minutes, 10 by
default, 1 with --quick, plus C's drain unless --soak-rate is given).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bench.harness.context import Bench, Row
from bench.scenarios.cluster import scenario_g
from bench.scenarios.dashboard import scenario_i
from bench.scenarios.enqueue import scenario_a, scenario_b
from bench.scenarios.enqueue_windows import scenario_q
from bench.scenarios.flow import scenario_h
from bench.scenarios.memory import scenario_f
from bench.scenarios.model import scenario_k
from bench.scenarios.output_streams import scenario_o
from bench.scenarios.pause_schedules import scenario_p
from bench.scenarios.payload_memory import scenario_n
from bench.scenarios.sandbox import scenario_l
from bench.scenarios.seed_loop import scenario_c0, scenario_e0
from bench.scenarios.sustained import scenario_t
from bench.scenarios.sync_enqueue import scenario_s
from bench.scenarios.task_types import scenario_m
from bench.scenarios.wide import scenario_j
from bench.scenarios.workers import scenario_c, scenario_d, scenario_e

ALL_SCENARIOS = (
    "A", "S", "B", "C0", "C", "D", "E0", "E", "F", "H", "G", "I", "J", "K", "M", "L",
    "N", "O", "P", "Q", "T",
)  # fmt: skip
DEFAULT_SCENARIOS = ("A", "S", "B", "C0", "C", "D", "E0", "E", "F", "H")  # G and I on request

SCENARIOS: dict[str, Callable[[Bench], Awaitable[Row]]] = {
    "A": scenario_a,
    "B": scenario_b,
    "C0": scenario_c0,
    "C": scenario_c,
    "D": scenario_d,
    "E0": scenario_e0,
    "E": scenario_e,
    "F": scenario_f,
    "G": scenario_g,
    "H": scenario_h,
    "I": scenario_i,
    "J": scenario_j,
    "K": scenario_k,
    "L": scenario_l,
    "M": scenario_m,
    "N": scenario_n,
    "O": scenario_o,
    "P": scenario_p,
    "Q": scenario_q,
    "S": scenario_s,
    "T": scenario_t,
}

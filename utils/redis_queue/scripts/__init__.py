"""The script contract: every Lua script's KEYS and ARGV, built from named arguments, its
reply parsed into a typed value, its error codes mapped to exceptions, and the one way
scripts are loaded and run. No other module builds KEYS/ARGV or reads a reply by
position. contract.py declares and builds, replies.py parses, runner.py loads and runs;
tests/test_script_contract.py checks each declaration against the header of its
lua/<name>.lua (key names, argument names, their order).

Loading: `--@include name` lines are replaced by lua/include/<name>.lua, and what Redis
runs (`script_source`) is a shebang with the script's flags, then the file. Scripts that
only drain or shrink the queue carry `allow-oom`, so under `maxmemory` with `noeviction`
workers can still claim, settle and clean up; the scripts that add work (enqueue,
retry_dlq) carry none, so Redis refuses them whole before their first command. `sizes` is
`no-writes`. Every call is EVALSHA; on NOSCRIPT (a restarted or flushed server) the source
is loaded and the call sent once more.
"""

from __future__ import annotations

from .contract import (
    BACK_OFF,
    CANCEL,
    CLAIM,
    CLEAR_FINISHED,
    COMPLETE,
    ENQUEUE,
    EXTEND,
    FAIL,
    PURGE_DLQ,
    RELEASE,
    RETRY_DLQ,
    SCRIPTS,
    SETTLE_MANY,
    SIZES,
    WORKER_BEAT,
    CancelOutcome,
    Code,
    FailOutcome,
    Script,
    ScriptCall,
    SettleItem,
    back_off,
    cancel,
    claim,
    clear_finished,
    complete,
    enqueue,
    extend,
    fail,
    purge_dlq,
    release,
    retry_dlq,
    settle_many,
    sizes,
    worker_beat,
)
from .replies import (
    PENDING_BAND,
    ClaimReply,
    cancel_outcome,
    claim_reply,
    enqueue_reply,
    extend_cancel_requested,
    fail_state,
    pending_band,
    raise_for_code,
    removed_count,
    settle_state,
    sizes_reply,
)
from .runner import (
    Scripts,
    load_source,
    run_pipelined,
    run_sync,
    script_sha,
    script_source,
)

__all__ = [
    "BACK_OFF",
    "CANCEL",
    "CLAIM",
    "CLEAR_FINISHED",
    "COMPLETE",
    "ENQUEUE",
    "EXTEND",
    "FAIL",
    "PENDING_BAND",
    "PURGE_DLQ",
    "RELEASE",
    "RETRY_DLQ",
    "SCRIPTS",
    "SETTLE_MANY",
    "SIZES",
    "WORKER_BEAT",
    "CancelOutcome",
    "ClaimReply",
    "Code",
    "FailOutcome",
    "Script",
    "ScriptCall",
    "Scripts",
    "SettleItem",
    "back_off",
    "cancel",
    "cancel_outcome",
    "claim",
    "claim_reply",
    "clear_finished",
    "complete",
    "enqueue",
    "enqueue_reply",
    "extend",
    "extend_cancel_requested",
    "fail",
    "fail_state",
    "load_source",
    "pending_band",
    "purge_dlq",
    "raise_for_code",
    "release",
    "removed_count",
    "retry_dlq",
    "run_pipelined",
    "run_sync",
    "script_sha",
    "script_source",
    "settle_many",
    "settle_state",
    "sizes",
    "sizes_reply",
    "worker_beat",
]

"""The harness queue_bench.py's scenarios run in, one concern per module.

config     paths, key prefix and task type, the sizes of a full and a quick run
payloads   task payloads and the list/number helpers the scenarios share
probe      what a measured section cost: wall time, CPU, Redis command counters
context    Bench (what a scenario gets) and Row (what it returns)
processes  `agentic worker` subprocesses and their CPU, read from /proc
load       how busy the machine is with other processes
dashboard  I's `agentic dashboard` subprocess, timed requests, Redis command rates, a browser
"""

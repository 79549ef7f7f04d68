"""Every threshold the classifier applies, with the measurement behind it: one home."""

from __future__ import annotations

from typing import Final

# Above 2% failed requests the successes we count (throughput) and time (latency) are a biased
# sample: timeouts drop exactly the slow requests. Such a level is shown but is not evidence.
MAX_ERROR_RATIO: Final = 0.02


# Fewer than three points cannot tell a line from a bend.
MIN_CLEAN_LEVELS: Final = 3


# The USL has three parameters; the field notes (usl4j, R `usl`) ask for >= 6 points.
USL_MIN_POINTS: Final = 6


# A plateau counts as seen only when the ladder went 30% past the fitted knee: closer than that, a
# +-10% jitter on one level can fake or hide the bend.
PLATEAU_MARGIN: Final = 1.3


# Serialised: the cap is at most 3 requests per worker. A cpu-bound route reaches ~1 (~0.75 per
# worker when two workers share two cores with the load generator); 3 leaves room for noise and for
# a partly GIL-free handler, and stays far below the thread limiter's 40.
SERIAL_MAX_PER_WORKER: Final = 3.0


# With the worker count unknown (remote server) a serial cap can be any small worker count; 16 is
# more workers than a single host usually runs and still well below one thread limiter (40*0.65).
SERIAL_MAX_UNKNOWN_WORKERS: Final = 16.0


# Threadpool: the cap lies within [0.65, 1.3] x 40*P. The limiter caps at exactly 40*P, so the
# band only absorbs fit noise; its upper edge keeps an io-bound route whose latency inflates late
# from the server's own CPU (knee ~75-95 with one worker, see the field notes' 40 ms route) out.
THREADPOOL_BAND: Final = (0.65, 1.3)


# A flat ladder rules the threadpool out only if it reached 1.2 x 40*P: past the knee with margin.
THREADPOOL_RULE_OUT: Final = 1.2


# Server CPU per busy worker splitting cpu-bound (~1.0; ~0.75 on a shared 2-core box) from
# loop-blocking (measured 0.03 for time.sleep in async def): the midpoint, with room either side.
CPU_BOUND_SPLIT: Final = 0.5


# Within this distance of the split a route is mixed (CPU and blocking): lower the confidence.
CPU_AMBIGUOUS_WIDTH: Final = 0.25


# A worker this close to one full core is CPU-saturated whatever else limits it.
CPU_SATURATED: Final = 0.85


# Residual RMS (log throughput) of the hockey-stick fit: +-10% uniform jitter gives ~0.06, so up to
# 0.1 is ordinary noise; at 0.4 (~50%) the curve says little.
NOISE_OK: Final = 0.10


NOISE_BAD: Final = 0.40


# A verdict whose CPU levels were taken while the host had no idle CPU: the demand reading still
# holds (waiting counts), but the curve's shape was bent by the neighbours.
STARVED_FACTOR: Final = 0.8


# Below this service time a request is mostly the framework's own work (measured here: 0.1-0.3 ms
# for a trivial route), and "move heavy work to a process pool" has nothing to move.
CHEAP_SERVICE_MS: Final = 2.0


# Stack samples as evidence: the event loop blocked inside app code in at least this share of
# samples confirms a blocked loop; idle in its selector this often contradicts one.
STACKS_AGREE: Final = 0.3


STACKS_IDLE_CONTRADICTS: Final = 0.6


STACKS_CONFIRM_FACTOR: Final = 1.1


# Pool threads seen waiting for a database connection (per worker, on average): the pool binds.
POOL_WAIT_THREADS: Final = 1.0


STACKS_CONTRADICT_FACTOR: Final = 0.6


# Confidence never claims certainty from a black-box measurement, nor drops to nothing.
CONFIDENCE_RANGE: Final = (0.05, 0.95)


# Unknown worker count: P=1 is a guess that moves both knees.
UNKNOWN_WORKERS_FACTOR: Final = 0.8


# Overload (judge/overload.py). A collapse is the #3205 deadlock when at least this share of
# AnyIO's threads per worker wait for a database connection (measured: all 40 of 40 in
# QueuePool._do_get on tests/apps/collapse_plain_app.py).
POOL_THREADS_EXHAUSTED: Final = 0.75


# The calls (as stack_attribution names them) that mean waiting for a pooled database connection,
# and a blocking lock or queue.
POOL_CALLS: Final = ("_do_get", "psycopg_pool", "asyncpg.pool")


LOCK_CALLS: Final = ("Lock", "acquire", "Condition.wait", "Queue.get", "queue.get", "Semaphore")

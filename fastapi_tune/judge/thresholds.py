"""Every threshold the classifier and the comparison with a baseline apply, with the measurement
behind it: one home."""

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


# The stacks keep most of their word on a starved host (they see where the loop is, not how fast),
# but not all: a starved load generator leaves the loop idle waiting for requests.
STARVED_STACKS_FACTOR: Final = 0.85


# Stack samples of the event loop below this many give the stacks a proportionally smaller word
# (at 100 Hz, 0.2 s of one worker; py-spy on a starved host may catch only a handful).
STACKS_FULL_SAMPLES: Final = 20


# Below this service time a request is mostly the framework's own work (measured here: 0.1-0.3 ms
# for a trivial route), and "move heavy work to a process pool" has nothing to move.
CHEAP_SERVICE_MS: Final = 2.0


# Stack samples as evidence: the event loop blocked inside app code in at least this share of
# samples confirms a blocked loop; idle in its selector this often contradicts one.
STACKS_AGREE: Final = 0.3


STACKS_IDLE_CONTRADICTS: Final = 0.6


# Pool threads busy inside the app, per worker: at the triage's spread level (4 in flight per
# worker) a `def` route keeps ~4 busy and an async one none; one busy thread on average is a `def`
# route, under half of one is an async route.
STACKS_THREADS_BUSY: Final = 1.0


# The event loop idle at least this share of samples, no pool thread busy: an async route waiting.
STACKS_IO_IDLE: Final = 0.5


# The loop in server/framework code this share of samples: a cheap route's own per-request CPU.
STACKS_FRAMEWORK: Final = 0.5


# A serialised route's side (cpu-bound or loop-blocking): the CPU's lean (-1 .. 1 across the split)
# plus this many times the stacks' (the loop's share computing less its share blocked).
STACKS_LEAN_WEIGHT: Final = 2.0


# The event loop held (blocked or computing in app code, or busy in the framework) this share of
# the samples at the triage's spread level: it can serve one request at a time, whatever two noisy
# levels seemed to show (a starved host slows c=1 most).
STACKS_LOOP_HELD: Final = 0.6


# How much the stacks alone can back a verdict (times the share of samples that agree): a sampled
# loop seen blocked in `time.sleep` 98% of the time is as direct as evidence gets from outside.
STACKS_WEIGHT: Final = 0.9


# Pool threads seen waiting for a database connection (per worker, on average): the pool binds.
POOL_WAIT_THREADS: Final = 1.0


STACKS_CONTRADICT_FACTOR: Final = 0.6


# Confidence never claims certainty from a black-box measurement, nor drops to nothing.
CONFIDENCE_RANGE: Final = (0.05, 0.95)


# Unknown worker count: P=1 is a guess that moves both knees.
UNKNOWN_WORKERS_FACTOR: Final = 0.8


# How much the curve alone backs a verdict, by clean levels: CURVE_SUPPORT_BASE + CURVE_SUPPORT_STEP
# per level, at most CURVE_SUPPORT_MAX (3 levels: 0.5, 6 or more: 0.8). Calibrated with
# benchmarks/calibrate.py (the reliability table in benchmarks/README.md).
CURVE_SUPPORT_BASE: Final = 0.2


CURVE_SUPPORT_STEP: Final = 0.1


CURVE_SUPPORT_MAX: Final = 0.8


# How much the server's CPU backs a serialised verdict (cpu-bound vs loop-blocking) when it sits a
# full CPU_AMBIGUOUS_WIDTH or more from CPU_BOUND_SPLIT.
CPU_SUPPORT_MAX: Final = 0.6


# Two clean levels are a verdict only when the top one held this many requests per worker (a
# serialised route keeps one per worker busy, a scaling one all) and the server's CPU or its
# stacks were read; else three levels are needed.
TWO_LEVELS_PER_WORKER: Final = 3.0


# A triage verdict below this confidence goes first to a full ladder (judge/priority.py).
DEEPEN_UNCERTAIN_BELOW: Final = 0.7


# ---------------------------------------------------------------------------------------
# compare / check: a route against its baseline (judge/compare.py); measured on this project's busy
# 2-core machines with benchmarks/check_noise.py

# The smallest change that counts, per metric, whatever the per-level spread says: what one run cannot
# see, a shift of the whole run. This project's busy 2-core VMs run their CPU at two speeds (a fixed
# pure-Python loop takes 2.1 or 3.6 ms of thread CPU time, switching within seconds: other tenants),
# so anything made of CPU time moves with it. Between 44 unchanged reports of tests/apps/check_app.py
# (1892 ordered pairs; idle neighbours, other sessions' load, a busy loop per core) the median
# per-level ratio of CPU per request reached x1.62 at the 99th percentile and x1.77 at most (x2.07
# against a run that gave the route a fifth of a core: its levels scatter, and the noise widens the
# band), p50 x1.66 (a cpu-bound route's latency is its CPU time queued) and the peak throughput x2.0
# (an io-bound route tops out on the CPU). With these floors none of the 1892 pairs raised an alarm;
# a time.sleep(0.02) in an `async def` was caught in 572 of 572 pairs (as a class change the stacks
# show), 2.5x the CPU on a route in 87 of 88 pairs without a busy loop beside the run and 388 of 484
# with one (it read x1.41 at the least) (benchmarks/check_noise.py). Where the two overlap, no false
# alarm wins.
CPU_FLOOR: Final = 0.80
LATENCY_FLOOR: Final = 0.70
CAPACITY_FLOOR: Final = 1.00
# CPU per request from the server's CPU cut to the counted window when the window holds this much CPU
# (psutil's clock ticks are 10 ms: a tenth of it at most); below, from the scheduler clocks.
SERVER_CPU_MIN_S: Final = 0.1
# The change must also exceed this many times its own noise (the standard error of the median ratio).
NOISE_K: Final = 3.0
# A band wider than this many floors (3 x noise that large) cannot tell "same": the metric is not
# judged (a baseline read on a host that gave the route 0.12-0.2 of a core scattered its levels by
# x2 and hid a 2.5x CPU inside "same").
NOISY_BAND_FACTOR: Final = 2.0
# From this many levels on, the spread is taken around the trend of the ratios across concurrency.
DETREND_MIN: Final = 4
# One paired level has no spread to measure: the floor counts twice.
SINGLE_LEVEL_FACTOR: Final = 2.0
# A class change without the stacks' word is believed only when both verdicts are at least this sure
# and at most this share of the route's levels was starved (a starved host bends every curve: a busy
# loop per core made an io-bound route read threadpool-bound and a `def` route cpu-bound).
CLASS_MIN_CONFIDENCE: Final = 0.5
CLASS_MAX_STARVED_SHARE: Final = 0.25
# A ladder cut by the budget below half the other's top did not reach where the other saw its knee.
LADDER_REACH: Final = 0.5
# The runner was busy: more than this share of the new run's levels was starved.
BUSY_STARVED_SHARE: Final = 0.25


# Overload (judge/overload.py). A collapse is the #3205 deadlock when at least this share of
# AnyIO's threads per worker wait for a database connection (measured: all 40 of 40 in
# QueuePool._do_get on tests/apps/collapse_plain_app.py).
POOL_THREADS_EXHAUSTED: Final = 0.75


# The calls (as stack_attribution names them) that mean waiting for a pooled database connection,
# and a blocking lock or queue.
POOL_CALLS: Final = ("_do_get", "psycopg_pool", "asyncpg.pool")


LOCK_CALLS: Final = ("Lock", "acquire", "Condition.wait", "Queue.get", "queue.get", "Semaphore")

"""hack/bench reads its step figures, retries and errors from the operator's log lines."""

from __future__ import annotations

from escrow_operator.exchange import STEP_DONE_FORMAT, STEP_RETRY_PREFIX
from hack.benchlib import steplog

LOG = f"""\
2026-11-29 06:04:46,861 ERROR kopf._cogs.clients.watching Request attempt #1/9 failed; will retry: GET /apis/xmrescrow.dev/v1alpha1/escrows -> 429
2026-11-29 06:05:01,002 INFO escrow_operator.exchange {STEP_DONE_FORMAT % ("bench", "bench-0001", "buyer", 0, "bench-1", 100.0, 104.5, 4.2, 0.1, 0)}
2026-11-29 06:05:03,118 WARNING escrow_operator.exchange {STEP_RETRY_PREFIX} vendor step 1: pod unavailable (PodLost); retrying on another pod
2026-11-29 06:05:04,200 WARNING escrow_operator.exchange {STEP_RETRY_PREFIX} arbiter round 2: wallet-rpc error -1 (attempt 1 of 3)
2026-11-29 06:05:06,000 INFO escrow_operator.exchange Step done: escrow=bench/bench-0001 role=buyer round=1 pod=bench-1 start=104.6 end=105.6 rpc=0.9 fs=0.05 warm=1
2026-11-29 06:05:07,000 INFO kopf.objects Handler 'reconcile_pool' succeeded.
"""


def test_steps_are_parsed_with_their_timings() -> None:
    steps = steplog.parse_steps(LOG)
    assert [(s.role, s.round, s.warm) for s in steps] == [("buyer", 0, False), ("buyer", 1, True)]
    assert round(steplog.busy_seconds(steps), 3) == 5.5
    assert steplog.warm_fraction(steps) == 0.5


def test_retried_attempts_count_pod_losses_and_errors() -> None:
    assert steplog.retried_attempts(LOG) == 2
    assert steplog.retried_attempts("... Step done: escrow=a/b role=r round=0 pod=p start=1 end=2\n") == 0


def test_error_lines_count_only_error_and_critical_records() -> None:
    assert steplog.error_lines(LOG) == 1
    assert steplog.error_lines(LOG + "2026-11-29 06:06:00,000 CRITICAL kopf boom\n") == 2

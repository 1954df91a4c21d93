"""A WalletPool's status (pool_status.compute), checked without a cluster."""

from __future__ import annotations

import pytest

from escrow_operator.pool_status import Applied, Pods, compute, pod_problem, problems_message, telling_line

OK = Applied(True, "Applied", "applied", 3, 2)


def conds(status) -> dict[str, tuple[str, str]]:  # type: ignore[no-untyped-def]
    return {c.type: (c.status.value, c.reason) for c in status.conditions}


@pytest.mark.parametrize(
    ("applied", "pods", "ready", "reconciling", "reason"),
    [
        (OK, Pods(0, 0), "False", "True", "ScalingUp"),
        (OK, Pods(2, 1), "False", "True", "PodsNotReady"),
        (OK, Pods(3, 3), "False", "True", "ScalingDown"),
        (OK, Pods(2, 2), "True", "False", "PodsReady"),
        (Applied(True, "Applied", "", 4, 0), Pods(0, 0), "True", "False", "PodsReady"),
    ],
)
def test_ready_and_reconciling_follow_the_pods(
    applied: Applied, pods: Pods, ready: str, reconciling: str, reason: str
) -> None:
    status = compute(applied, pods, "sel", [])
    c = conds(status)
    assert c["Ready"] == (ready, reason)
    assert c["Reconciling"][0] == reconciling
    assert c["Stalled"] == ("False", "AsExpected")
    assert status.observed_generation == applied.generation
    assert all(x.observed_generation == applied.generation for x in status.conditions)
    assert (status.replicas, status.ready_replicas, status.selector) == (pods.existing, pods.ready, "sel")


def test_a_refused_spec_is_stalled_and_not_reconciling() -> None:
    status = compute(Applied(False, "ImageNotAllowed", "spec.image 'x' is not allowed", 2, 2), Pods(0, 0), "sel", [])
    c = conds(status)
    assert c["Stalled"] == ("True", "ImageNotAllowed")
    assert c["Reconciling"][0] == "False"
    assert c["Ready"] == ("False", "ImageNotAllowed")
    assert c["Reconciled"] == ("False", "ImageNotAllowed")


UNRECOGNISED = "Failed to parse arguments: unrecognised option '--allow-mismatched-daemon-version'"


def pod(*containers: dict) -> dict:
    return {"metadata": {"name": "wallets-0"}, "status": {"containerStatuses": list(containers)}}


def crashing(
    name: str = "wallet-rpc", message: str = f"Monero 'Fluorine Fermi' (v0.18.0.0-release)\n{UNRECOGNISED}\n"
) -> dict:
    return {
        "name": name,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s restarting failed container"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": message}},
    }


def test_a_crashing_container_is_told_by_its_exit_code_and_last_line() -> None:
    running = {"name": "walletfs", "state": {"running": {}}}
    assert pod_problem(pod(running, crashing())) == f"wallet-rpc exits with code 1: {UNRECOGNISED} (CrashLoopBackOff)"
    assert pod_problem(pod(crashing(message=""))) == "wallet-rpc exits with code 1 (CrashLoopBackOff)"


def test_a_missing_image_is_told_by_the_kubelets_reason_and_message() -> None:
    missing = {"name": "wallet-rpc", "state": {"waiting": {"reason": "ErrImageNeverPull", "message": "build it"}}}
    assert pod_problem(pod(missing)) == "wallet-rpc: ErrImageNeverPull: build it"


@pytest.mark.parametrize(
    "containers",
    [
        (),
        ({"name": "wallet-rpc", "state": {"waiting": {"reason": "ContainerCreating"}}},),
        ({"name": "wallet-rpc", "state": {"running": {}}, "lastState": {"terminated": {"exitCode": 137}}},),
    ],
    ids=["no-status-yet", "creating", "running-after-a-kill"],
)
def test_pods_that_start_or_run_have_no_problem(containers: tuple[dict, ...]) -> None:
    assert pod_problem(pod(*containers)) is None


def test_the_pool_says_why_its_pods_are_not_ready_once_per_problem() -> None:
    problem = pod_problem(pod(crashing()))
    assert problem is not None
    status = compute(OK, Pods(2, 0, problems=(problem, problem)), "sel", [])
    ready = next(c for c in status.conditions if c.type == "Ready")
    reconciling = next(c for c in status.conditions if c.type == "Reconciling")
    assert ready.message == f"0 of 2 pods ready, 2 exist; 2 pods: {problem}"
    assert reconciling.message == ready.message
    ok = compute(OK, Pods(2, 2, problems=()), "sel", [])
    assert next(c for c in ok.conditions if c.type == "Ready").message == "2 of 2 pods ready, 2 exist"


def test_many_different_problems_are_cut_short() -> None:
    said = problems_message(("a", "b", "b", "c", "d", "e"))
    assert said == "2 pods: b; 1 pod: a; 1 pod: c; and 2 more"


USAGE_TAIL = """  --max-log-files arg (=50)             Specify maximum number of rotated log
                                        files to be saved (no limit by setting
                                        to 0)
  --config-file arg                     Config file

Hidden:
"""


@pytest.mark.parametrize(
    ("message", "line"),
    [
        (f"Monero 'Fluorine Fermi' (v0.18.0.0-release)\n{UNRECOGNISED}\nGeneral options:\n", UNRECOGNISED),
        ("starting\nError: cannot bind 127.0.0.1:18083\nbye\n", "Error: cannot bind 127.0.0.1:18083"),
        (USAGE_TAIL, "it printed its usage: it refused its command line (an option this version does not know?)"),
        ("one\ntwo\n\n", "two"),
        ("", ""),
    ],
    ids=["error-then-usage", "error-then-more", "usage-only", "plain", "empty"],
)
def test_the_telling_line_of_a_termination_message(message: str, line: str) -> None:
    assert telling_line(message) == line

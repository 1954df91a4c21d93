"""What Flux (kstatus) and Argo CD say about an Escrow, an EscrowPayout or a WalletPool in each state
of the status contract (docs/install.md, GitOps), from the tools' own code: kstatus's ``status.Compute`` and the
Argo CD health checks of docs/install.md run in gopher-lua as Argo CD runs them
(tests/support/gitops.py).

The objects are synthetic: each holds the status the operator writes in that state. No cluster is
needed, only the ``gitops-verdict`` binary of ``make tools`` (hence integration). Captures of real
objects on the dev cluster use the same helper.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.gitops import ARGO, INSTALL_MD, KSTATUS, GitOpsToolError, verdict, verdicts

API_VERSION = "xmrescrow.dev/v1alpha1"
ADDRESS = "4" + "A" * 94
T0 = "2025-01-01T00:00:00Z"


def cond(type: str, status: bool, reason: str, message: str = "", generation: int = 1) -> dict[str, Any]:
    return {
        "type": type,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": T0,
    }


def conditions(
    ready: tuple[bool, str, str],
    reconciling: tuple[bool, str, str],
    stalled: tuple[bool, str, str] = (False, "AsExpected", ""),
    degraded: tuple[bool, str, str] | None = (False, "AsExpected", ""),
    generation: int = 1,
) -> list[dict[str, Any]]:
    out = [
        cond("Ready", *ready, generation=generation),
        cond("Reconciling", *reconciling, generation=generation),
        cond("Stalled", *stalled, generation=generation),
    ]
    if degraded is not None:
        out.append(cond("Degraded", *degraded, generation=generation))
    return out


def escrow(status: dict[str, Any] | None, *, generation: int = 1, deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": "order-1",
        "namespace": "shop",
        "uid": "u-1",
        "generation": generation,
        "creationTimestamp": T0,
    }
    if deleting:
        metadata["deletionTimestamp"] = T0
        metadata["finalizers"] = ["xmrescrow.dev/escrow"]
    obj: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "Escrow",
        "metadata": metadata,
        "spec": {
            "poolRef": "wallets",
            "threshold": 2,
            "participants": ["buyer", "vendor", "arbiter"],
            "walletRetention": "Retain",
        },
    }
    if status is not None:
        obj["status"] = status
    return obj


def escrow_status(
    phase: str, message: str, conds: list[dict[str, Any]], generation: int = 1, **extra: Any
) -> dict[str, Any]:
    return {
        "phase": phase,
        "round": 0,
        "rounds": 4,
        "observedGeneration": generation,
        "message": message,
        "conditions": conds,
        **extra,
    }


def pool(replicas: int, status: dict[str, Any] | None, *, generation: int = 1) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "WalletPool",
        "metadata": {
            "name": "wallets",
            "namespace": "shop",
            "uid": "u-2",
            "generation": generation,
            "creationTimestamp": T0,
        },
        "spec": {"replicas": replicas, "storage": {"size": "10Gi"}, "network": "mainnet", "daemon": "offline"},
    }
    if status is not None:
        obj["status"] = status
    return obj


def pool_status(replicas: int, ready: int, conds: list[dict[str, Any]], generation: int = 1) -> dict[str, Any]:
    return {
        "replicas": replicas,
        "readyReplicas": ready,
        "busyPods": 0,
        "queuedSteps": 0,
        "observedGeneration": generation,
        "conditions": conds,
    }


def payout(status: dict[str, Any] | None, *, deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": "release-1",
        "namespace": "shop",
        "uid": "u-3",
        "generation": 1,
        "creationTimestamp": T0,
    }
    if deleting:
        metadata["deletionTimestamp"] = T0
        metadata["finalizers"] = ["xmrescrow.dev/escrow-wallets"]
    obj: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "EscrowPayout",
        "metadata": metadata,
        "spec": {
            "escrowRef": "order-1",
            "signers": ["vendor", "arbiter"],
            "destinations": [{"address": ADDRESS, "amount": 1_500_000_000_000}],
            "priority": 0,
            "confirmations": 10,
        },
    }
    if status is not None:
        obj["status"] = status
    return obj


def payout_status(phase: str, message: str, conds: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A payout's status as payout_status writes it; a built transaction adds its amount and fee."""
    return {
        "phase": phase,
        "attempt": 0,
        "signatures": 0,
        "txHashes": [],
        "observedGeneration": 1,
        "message": message,
        "conditions": conds,
        **extra,
    }


PAYOUT_TX = "ab" * 32
#: What a built 1.5 XMR payout records (payout_status.signing), in atomic units and in XMR.
BUILT = {"amount": 1_500_000_000_000, "amountXmr": "1.5", "fee": 30_720_000, "feeXmr": "0.00003072"}
SUBMITTED = {
    **BUILT,
    "attempt": 1,
    "signatures": 2,
    "txHashes": [PAYOUT_TX],
    "secretName": "payout-release-1",
    "escrowUid": "u-1",
    "submittedAt": T0,
}
NOT_READY_ESCROW = "escrow order-1 is KeyExchange, not Ready"
SYNCING = "attempt 1: exchanging multisig infos"
SIGNING = "attempt 1: 1 of 2 signatures"
CONFIRMING = "in block 140: 3 of 10 confirmations"
DAEMON_DOWN = "monerod node:18081: connection refused"
CONFIRMED = "confirmed in block 140 (10 confirmations)"
SIGNER_UNKNOWN = "signer(s) judge are not participants of escrow order-1 (buyer, vendor, arbiter); delete this payout"

ROUND2 = "round 2 of 3 (exchange_multisig_keys)"
RETRIED = "buyer round 2 on wallets-1: wallet-rpc error -1, retrying"
FAILED = "buyer round 2: wallet-rpc error -18 (no connection to daemon) after 5 attempts"
POOL_READY = (True, "PodsReady", "all pods ready")

# (id, object, kstatus, argo, text the Argo CD message holds)
CASES: list[tuple[str, dict[str, Any], str, str, str]] = [
    # --- Escrow --------------------------------------------------------------------------------
    # Never seen on the API server (the CRD defaults status), shown for what it would read as: kstatus
    # has no generation to compare and no condition, so Current; Argo CD's check says Progressing.
    ("escrow-no-status", escrow(None), "Current", "Progressing", "waiting for the operator"),
    ("escrow-defaulted-status", escrow({"observedGeneration": 0}), "InProgress", "Progressing", "observe generation 1"),
    (
        "escrow-pending",
        escrow(
            escrow_status(
                "Pending",
                "waiting for a pod",
                conditions((False, "Pending", "waiting for a pod"), (True, "Pending", "waiting for a pod")),
            )
        ),
        "InProgress",
        "Progressing",
        "waiting for a pod",
    ),
    (
        "escrow-pool-not-found",
        escrow(
            escrow_status(
                "Pending",
                "WalletPool wallets not found",
                conditions(
                    (False, "PoolNotFound", "WalletPool wallets not found"),
                    (True, "PoolNotFound", "WalletPool wallets not found"),
                ),
            )
        ),
        "InProgress",
        "Progressing",
        "WalletPool wallets not found",
    ),
    (
        "escrow-round-in-progress",
        escrow(
            escrow_status(
                "KeyExchange", ROUND2, conditions((False, "Round2", ROUND2), (True, "Round2", ROUND2)), round=2
            )
        ),
        "InProgress",
        "Progressing",
        ROUND2,
    ),
    (
        "escrow-step-retried",
        escrow(
            escrow_status(
                "KeyExchange",
                ROUND2,
                conditions(
                    (False, "Round2", ROUND2), (True, "Round2", ROUND2), degraded=(True, "StepRetried", RETRIED)
                ),
                round=2,
            )
        ),
        "InProgress",
        "Progressing",
        RETRIED,
    ),
    (
        "escrow-retried-step-recovered",
        escrow(
            escrow_status(
                "KeyExchange",
                ROUND2,
                conditions(
                    (False, "Round2", ROUND2), (True, "Round2", ROUND2), degraded=(False, "Recovered", "step succeeded")
                ),
                round=2,
            )
        ),
        "InProgress",
        "Progressing",
        ROUND2,
    ),
    (
        "escrow-ready",
        escrow(
            escrow_status(
                "Ready",
                "multisig address ready",
                conditions(
                    (True, "MultisigReady", "2-of-3 multisig address is ready"),
                    (False, "Complete", "key exchange complete"),
                ),
                round=4,
                address=ADDRESS,
            )
        ),
        "Current",
        "Healthy",
        ADDRESS,
    ),
    (
        "escrow-ready-address-corrected",
        escrow(
            escrow_status(
                "Ready",
                "multisig address ready",
                conditions(
                    (True, "MultisigReady", "2-of-3 multisig address is ready"),
                    (False, "Complete", "key exchange complete"),
                    degraded=(True, "AddressCorrected", "stored address corrected"),
                ),
                round=4,
                address=ADDRESS,
            )
        ),
        "Current",
        "Healthy",
        ADDRESS,
    ),
    (
        "escrow-failed",
        escrow(
            escrow_status(
                "Failed",
                FAILED,
                conditions(
                    (False, "WalletRpcError", FAILED),
                    (False, "Failed", "key exchange stopped; wallet files are kept"),
                    stalled=(True, "WalletRpcError", FAILED),
                    degraded=(True, "WalletRpcError", FAILED),
                ),
                round=2,
            )
        ),
        "Failed",
        "Degraded",
        FAILED,
    ),
    (
        "escrow-retrying-after-failure",
        escrow(
            escrow_status(
                "KeyExchange",
                "retry '1' requested: running the remaining rounds again",
                conditions(
                    (False, "Retrying", "retry '1' requested: running the remaining rounds again"),
                    (True, "Retrying", "retry '1' requested: running the remaining rounds again"),
                    degraded=(False, "Retrying", "retry '1' requested"),
                ),
                round=2,
                lastRetry="1",
            )
        ),
        "InProgress",
        "Progressing",
        "running the remaining rounds again",
    ),
    (
        # A Ready status of generation 1 on an object at generation 2: the new spec is not seen yet.
        "escrow-spec-not-observed",
        escrow(
            escrow_status(
                "Ready",
                "multisig address ready",
                conditions((True, "MultisigReady", "ready"), (False, "Complete", "done")),
                address=ADDRESS,
            ),
            generation=2,
        ),
        "InProgress",
        "Progressing",
        "observe generation 2",
    ),
    (
        # Argo CD reads any object being deleted as Progressing, before its health check.
        "escrow-being-deleted",
        escrow(
            escrow_status(
                "Ready",
                "multisig address ready",
                conditions((True, "MultisigReady", "ready"), (False, "Complete", "done")),
                address=ADDRESS,
            ),
            deleting=True,
        ),
        "Terminating",
        "Progressing",
        "Pending deletion",
    ),
    # --- WalletPool ----------------------------------------------------------------------------
    ("pool-no-status", pool(3, None), "Current", "Progressing", "waiting for the operator"),
    (
        "pool-defaulted-status",
        pool(3, {"observedGeneration": 0, "replicas": 0, "readyReplicas": 0}),
        "InProgress",
        "Progressing",
        "observe generation 1",
    ),
    (
        "pool-scaling-up",
        pool(
            3,
            pool_status(
                1, 1, conditions((False, "PodsNotReady", "1/3 pods ready"), (True, "Scaling", "scaling to 3 pods"))
            ),
        ),
        "InProgress",
        "Progressing",
        "1/3 wallet-rpc pods ready",
    ),
    (
        "pool-pods-not-ready",
        pool(
            2,
            pool_status(
                2,
                0,
                conditions((False, "PodsNotReady", "0/2 pods ready"), (True, "PodsNotReady", "waiting for 2 pods")),
            ),
        ),
        "InProgress",
        "Progressing",
        "0/2 wallet-rpc pods ready",
    ),
    (
        "pool-ready",
        pool(3, pool_status(3, 3, conditions(POOL_READY, (False, "Complete", "")))),
        "Current",
        "Healthy",
        "3/3 wallet-rpc pods ready",
    ),
    (
        "pool-zero-of-zero",
        pool(0, pool_status(0, 0, conditions(POOL_READY, (False, "Complete", "")))),
        "Current",
        "Healthy",
        "0/0 wallet-rpc pods ready",
    ),
    (
        "pool-spec-refused",
        pool(
            3,
            pool_status(
                0,
                0,
                conditions(
                    (False, "ImageNotAllowed", "image evil/wallet-rpc is not allowed"),
                    (False, "ImageNotAllowed", "spec refused"),
                    stalled=(True, "ImageNotAllowed", "image evil/wallet-rpc is not allowed"),
                    degraded=None,
                ),
            ),
        ),
        "Failed",
        "Degraded",
        "image evil/wallet-rpc is not allowed",
    ),
    (
        "pool-scaled-spec-not-observed",
        pool(5, pool_status(3, 3, conditions(POOL_READY, (False, "Complete", ""))), generation=2),
        "InProgress",
        "Progressing",
        "observe generation 2",
    ),
    # --- EscrowPayout --------------------------------------------------------------------------
    # Pending..Submitted Progressing, Confirmed Healthy, Failed Degraded (payout_status's table).
    ("payout-defaulted-status", payout({"observedGeneration": 0}), "InProgress", "Progressing", "observe generation 1"),
    (
        "payout-pending",
        payout(
            payout_status(
                "Pending",
                NOT_READY_ESCROW,
                conditions((False, "EscrowNotReady", NOT_READY_ESCROW), (True, "EscrowNotReady", NOT_READY_ESCROW)),
            )
        ),
        "InProgress",
        "Progressing",
        "Pending: " + NOT_READY_ESCROW,
    ),
    (
        # Trouble before anything is built: Degraded says the same as Ready, so nothing is added.
        "payout-pending-daemon-unavailable",
        payout(
            payout_status(
                "Pending",
                DAEMON_DOWN,
                conditions(
                    (False, "DaemonUnavailable", DAEMON_DOWN),
                    (True, "DaemonUnavailable", DAEMON_DOWN),
                    degraded=(True, "DaemonUnavailable", DAEMON_DOWN),
                ),
            )
        ),
        "InProgress",
        "Progressing",
        "Pending: " + DAEMON_DOWN,
    ),
    (
        "payout-syncing",
        payout(
            payout_status(
                "Syncing",
                SYNCING,
                conditions((False, "Syncing", SYNCING), (True, "Syncing", SYNCING)),
                attempt=1,
                secretName="payout-release-1",
            )
        ),
        "InProgress",
        "Progressing",
        "Syncing: " + SYNCING,
    ),
    (
        "payout-signing",
        payout(
            payout_status(
                "Signing",
                SIGNING,
                conditions((False, "Signing", SIGNING), (True, "Signing", SIGNING)),
                attempt=1,
                signatures=1,
                secretName="payout-release-1",
                **BUILT,
            )
        ),
        "InProgress",
        "Progressing",
        f"Signing: {SIGNING}; 1.5 XMR, fee 0.00003072 XMR",
    ),
    (
        "payout-submitted",
        payout(
            payout_status(
                "Submitted",
                CONFIRMING,
                conditions((False, "Confirming", CONFIRMING), (True, "Confirming", CONFIRMING)),
                height=140,
                confirmations=3,
                **SUBMITTED,
            )
        ),
        "InProgress",
        "Progressing",
        f"Submitted: {CONFIRMING}; 1.5 XMR, fee 0.00003072 XMR",
    ),
    (
        # Once submitted, a wait keeps the phase and conditions; only the message and Degraded change.
        "payout-submitted-daemon-unavailable",
        payout(
            payout_status(
                "Submitted",
                DAEMON_DOWN,
                conditions(
                    (False, "Confirming", CONFIRMING),
                    (True, "Confirming", CONFIRMING),
                    degraded=(True, "DaemonUnavailable", DAEMON_DOWN),
                ),
                height=140,
                confirmations=3,
                **SUBMITTED,
            )
        ),
        "InProgress",
        "Progressing",
        f"Submitted: {CONFIRMING} (held up: {DAEMON_DOWN}); 1.5 XMR, fee 0.00003072 XMR",
    ),
    (
        "payout-confirmed",
        payout(
            payout_status(
                "Confirmed",
                CONFIRMED,
                conditions((True, "Confirmed", CONFIRMED), (False, "Confirmed", CONFIRMED)),
                height=140,
                confirmations=10,
                confirmedAt=T0,
                **SUBMITTED,
            )
        ),
        "Current",
        "Healthy",
        f"{CONFIRMED}; 1.5 XMR, fee 0.00003072 XMR",
    ),
    (
        "payout-failed",
        payout(
            payout_status(
                "Failed",
                SIGNER_UNKNOWN,
                conditions(
                    (False, "SignerUnknown", SIGNER_UNKNOWN),
                    (False, "SignerUnknown", SIGNER_UNKNOWN),
                    stalled=(True, "SignerUnknown", SIGNER_UNKNOWN),
                ),
            )
        ),
        "Failed",
        "Degraded",
        SIGNER_UNKNOWN,
    ),
    (
        "payout-being-deleted",
        payout({"observedGeneration": 0}, deleting=True),
        "Terminating",
        "Progressing",
        "Pending deletion",
    ),
]


def test_each_state_of_the_status_contract() -> None:
    """All states in one run of the tool (one process), each checked against what it must read as."""
    got = verdicts([obj for _, obj, *_ in CASES])
    wrong = []
    for (name, _, kstatus, argo, text), v in zip(CASES, got, strict=True):
        assert v.kstatus in KSTATUS and v.argo in ARGO, f"{name}: {v}"
        if v.pair != (kstatus, argo) or text not in v.argo_message:
            wrong.append(f"{name}: want ({kstatus}, {argo}, {text!r}), got {v}")
    assert not wrong, "\n".join(wrong)


def test_the_tool_runs_health_checks_as_argo_cd_does(tmp_path: Path) -> None:
    """What the tool does with a health check mirrors Argo CD: an unknown status reads Unknown, the
    string library is not there, require("os") gives time and date only, a broken script is an error;
    ``kind`` picks the check for objects without their own."""

    def install_md(script: str) -> Path:
        body = "\n".join("    " + line for line in script.strip().splitlines())
        path = tmp_path / "install.md"
        path.write_text(
            f"# x\n\n```yaml\ndata:\n  resource.customizations.health.xmrescrow.dev_Escrow: |\n{body}\n```\n"
        )
        return path

    obj = escrow({"observedGeneration": 1})
    assert verdict(obj, install_md=install_md('return {status = "Fine", message = "x"}')).pair == ("Current", "Unknown")
    os_check = 'local os = require("os"); return {status = "Healthy", message = type(os.time()) .. type(os.date) .. type(os.exit)}'
    assert verdict(obj, install_md=install_md(os_check)).argo_message == "numberfunctionnil"
    with pytest.raises(GitOpsToolError, match=r"non-table object\(nil\) with key 'upper'"):
        verdict(obj, install_md=install_md('return {status = string.upper("healthy")}'))
    with pytest.raises(GitOpsToolError, match="does not compile"):
        verdict(obj, install_md=install_md("return {status = "))
    with pytest.raises(GitOpsToolError, match="not a table"):
        verdict(obj, install_md=install_md('return "Healthy"'))

    bare = {k: v for k, v in escrow({"observedGeneration": 0}).items() if k not in ("apiVersion", "kind")}
    assert verdict(bare, kind="Escrow").pair == ("InProgress", "Progressing")
    bare_payout = {k: v for k, v in payout({"observedGeneration": 0}).items() if k not in ("apiVersion", "kind")}
    assert verdict(bare_payout, kind="EscrowPayout").argo_message == "waiting for the operator to observe generation 1"
    with pytest.raises(GitOpsToolError, match=r"no health check for xmrescrow\.dev/Order"):
        verdict({**escrow(None), "kind": "Order"})
    assert INSTALL_MD.is_file()

"""Fault points are data: the crash test iterates what the operator reaches, and unknown points are refused."""

from __future__ import annotations

import pytest

from escrow_operator import multisig
from escrow_operator.faults import Faults, InjectedFault, step_points


def rpc(*methods: str) -> list[str]:
    return [f"rpc.{when}.{m}" for m in methods for when in ("before", "after")]


AFTER = ["step.after_publish", "round.before_status", "round.after_status"]


def test_the_points_of_a_2_of_3_exchange_in_order() -> None:
    shape = multisig.Shape(2, 3)
    got = {step: step_points(step, shape.final, multisig.calls(step, shape)) for step in range(shape.final + 1)}
    assert got == {
        0: [
            "step.start",
            *rpc("drop_stale", "create_wallet", "prepare_multisig"),
            "step.after_record",
            *rpc("store"),
            "step.before_publish",
            *AFTER,
        ],
        1: [
            "step.start",
            *rpc("drop_stale"),
            "step.after_copy",
            *rpc("open_wallet", "prepare_multisig", "make_multisig", "is_multisig"),
            "step.after_record",
            *rpc("store"),
            "step.before_publish",
            *AFTER,
        ],
        2: [
            "step.start",
            *rpc("drop_stale"),
            "step.after_copy",
            *rpc("open_wallet", "exchange_multisig_keys"),
            "step.after_record",
            *rpc("store"),
            "step.before_publish",
            *AFTER,
        ],
        3: [
            "step.start",
            *rpc("drop_stale"),
            "step.after_copy",
            *rpc("open_wallet", "exchange_multisig_keys", "is_multisig"),
            "step.after_record",
            *rpc("close_wallet"),
            "step.before_publish",
            *AFTER,
        ],
    }


def test_without_affinity_every_step_closes_its_wallet() -> None:
    points = step_points(1, 3, multisig.calls(1, multisig.Shape(2, 3)), affinity=False)
    assert "rpc.before.close_wallet" in points and "rpc.before.store" not in points


def test_an_unknown_point_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"no point 'step.after_publsh'.*step.after_publish"):
        Faults.parse("crash:step.after_publsh@2", "test")
    assert Faults.parse("crash:step.after_publish@2,fail:rpc.before.exchange_multisig_keys@3x2", "test")


async def test_a_fault_with_a_word_fires_only_in_steps_whose_label_has_it() -> None:
    faults = Faults.parse("fail:step.after_record/sign@2", "test")
    await faults.check("step.after_record", 2, "pod0", "p/sync vendor")
    await faults.check("step.after_record", 1, "pod0", "p/sign vendor")
    await faults.check("step.after_record", 2, "pod0", "p/signature")  # a word, not a prefix
    with pytest.raises(InjectedFault, match=r"step\.after_record"):
        await faults.check("step.after_record", 2, "pod0", "p/sign vendor")
    await faults.check("step.after_record", 2, "pod0", "p/sign vendor")  # once (no xCOUNT)

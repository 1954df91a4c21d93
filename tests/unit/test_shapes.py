"""The size model of the key-exchange messages and the shapes it admits (escrow_operator.shapes)."""

from __future__ import annotations

import pytest

from escrow_operator import shapes
from escrow_operator.api import MAX_PARTICIPANTS, MIN_PARTICIPANTS
from escrow_operator.api.escrow import MIN_THRESHOLDS
from escrow_operator.naming import final_step

#: ``hack/measure-message-sizes.py --shape M-of-N`` on Debian's monero-wallet-rpc 0.18.0.0: the length
#: of every participant's multisig_info for steps 0..K (all participants of a shape measured the same).
MEASURED: dict[tuple[int, int], list[int]] = {
    (1, 2): [189, 192, 236, 236],
    (1, 3): [189, 236, 192, 236, 236],
    (2, 3): [189, 236, 236, 236],
    (3, 3): [189, 236, 236],
    (2, 4): [189, 280, 280, 236, 236],
    (2, 5): [189, 324, 412, 324, 236, 236],
    (3, 5): [189, 324, 412, 236, 236],
    (2, 6): [189, 368, 588, 588, 368, 236, 236],
    (4, 6): [189, 368, 588, 236, 236],
}

#: The field report: a 2-of-16 Secret held 1,017,748 bytes when a write of step 4 was refused (422).
REPORTED_2_OF_16 = 1_017_748

#: The lowest threshold per participant count (the CRD's rule and the pydantic validator).
EXPECTED_MIN_THRESHOLDS = {**{n: 1 for n in range(2, 12)}, 12: 6, 13: 9, 14: 10, 15: 12, 16: 13}

ALL_SHAPES = [(m, n) for n in range(MIN_PARTICIPANTS, MAX_PARTICIPANTS + 1) for m in range(1, n + 1)]


@pytest.mark.parametrize(
    ("threshold", "participants"), sorted(MEASURED), ids=[f"{m}-of-{n}" for m, n in sorted(MEASURED)]
)
def test_model_reproduces_every_measured_length(threshold: int, participants: int) -> None:
    measured = MEASURED[(threshold, participants)]
    assert len(measured) == final_step(participants, threshold) + 1  # steps 0..K
    assert [shapes.message_length(participants, threshold, step) for step in range(len(measured))] == measured


def test_model_reproduces_the_2_of_16_field_report() -> None:
    """Passwords, steps 0-3 of all 16 participants and step 4 (C(15, 4) = 1365 keys) of ten: the
    eleventh step-4 message no longer fits."""
    n, m = 16, 2
    step4 = shapes.message_length(n, m, 4)
    assert shapes.message_keys(n, m, 4) == 1365 and step4 == 60_210
    held = n * shapes.PASSWORD_LENGTH + n * sum(shapes.message_length(n, m, s) for s in range(4)) + 10 * step4
    assert held == REPORTED_2_OF_16
    assert held + step4 > shapes.SECRET_DATA_LIMIT


def test_key_counts() -> None:
    assert shapes.message_keys(16, 2, 0) == 0  # step 0 carries a private key, no key list
    assert [shapes.message_keys(16, 2, s) for s in range(1, 15)] == [
        15,
        105,
        455,
        1365,
        3003,
        5005,
        6435,
        6435,
        5005,
        3003,
        1365,
        455,
        105,
        15,
    ]
    assert shapes.message_keys(16, 2, 15) == shapes.message_keys(16, 2, 16) == shapes.POST_KEX_KEYS
    assert shapes.message_keys(3, 3, 1) == shapes.POST_KEX_KEYS  # N-of-N: one kex round, then post-kex
    assert shapes.message_keys(3, 1, 2) == 1  # 1-of-N: the last kex round has C(N-1, N-1) keys
    for bad in (-1, final_step(5, 2) + 1):
        with pytest.raises(ValueError, match="outside"):
            shapes.message_keys(5, 2, bad)
    with pytest.raises(ValueError, match="threshold"):
        shapes.message_length(3, 4, 0)


def test_each_key_adds_44_characters() -> None:
    """32-byte keys are four whole base58 blocks: 44 characters wherever they start (until the count's
    varint grows a byte)."""
    for keys in range(1, 127):
        payload = 1 + 1 + shapes.KEY_BYTES * keys + shapes.SIGNATURE_BYTES
        assert shapes.base58_length(payload + shapes.KEY_BYTES) - shapes.base58_length(payload) == 44


@pytest.mark.parametrize(
    ("size", "length"),
    [(0, 0), (1, 2), (7, 10), (8, 11), (9, 13), (69, 95), (77, 106), (128, 176)],
)
def test_base58_length(size: int, length: int) -> None:
    """69 bytes: a standard address (95 characters); 77: an integrated one (106)."""
    assert shapes.base58_length(size) == length


def test_address_and_first_message_lengths_follow_from_the_encoding() -> None:
    assert shapes.base58_length(1 + 32 + 32 + 4) == shapes.ADDRESS_LENGTH  # tag, two keys, checksum
    assert (
        shapes.message_length(3, 2, 0)
        == shapes.MAGIC_LENGTH + shapes.base58_length(shapes.FIRST_MESSAGE_PAYLOAD)
        == 189
    )


@pytest.mark.parametrize(("value", "length"), [(0, 1), (127, 1), (128, 2), (16_383, 2), (16_384, 3)])
def test_varint_length(value: int, length: int) -> None:
    assert shapes.varint_length(value) == length


def test_secret_data_of_the_default_escrow() -> None:
    # 3 x (password 43 + address 95 + messages of steps 0, 1, 2: 189 + 236 + 236)
    assert shapes.secret_data_bytes(3, 2) == 3 * (43 + 95 + 189 + 236 + 236) == 2397
    assert list(shapes.recorded_steps(3, 2)) == [0, 1, 2]


def test_min_thresholds_table() -> None:
    assert shapes.min_thresholds(MIN_PARTICIPANTS, MAX_PARTICIPANTS) == EXPECTED_MIN_THRESHOLDS == MIN_THRESHOLDS


@pytest.mark.parametrize(("threshold", "participants"), ALL_SHAPES)
def test_admitted_shapes_fit_and_refused_ones_do_not(threshold: int, participants: int) -> None:
    admitted = threshold >= MIN_THRESHOLDS[participants]
    size = shapes.secret_data_bytes(participants, threshold)
    assert admitted == (size <= shapes.SECRET_DATA_BUDGET), (threshold, participants, size)
    if admitted:
        assert size < shapes.SECRET_DATA_LIMIT


def test_sizes_grow_with_participants_and_shrink_with_threshold() -> None:
    """What makes a per-N minimum threshold the whole rule."""
    for m, n in ALL_SHAPES:
        if m < n:
            assert shapes.secret_data_bytes(n, m + 1) < shapes.secret_data_bytes(n, m)
        if n < MAX_PARTICIPANTS:
            assert shapes.secret_data_bytes(n + 1, m) > shapes.secret_data_bytes(n, m)


def test_the_margin_refuses_a_few_shapes_that_would_just_fit() -> None:
    just_fitting = [
        (m, n)
        for m, n in ALL_SHAPES
        if shapes.SECRET_DATA_BUDGET < shapes.secret_data_bytes(n, m) <= shapes.SECRET_DATA_LIMIT
    ]
    assert just_fitting == [(5, 12), (8, 13), (11, 15)]
    assert shapes.min_thresholds(2, 16, budget=shapes.SECRET_DATA_LIMIT) == {
        **EXPECTED_MIN_THRESHOLDS,
        12: 5,
        13: 8,
        15: 11,
    }


def test_largest_admitted_shapes() -> None:
    assert shapes.secret_data_bytes(11, 1) == 517_671  # the largest below 12 participants
    assert max(
        shapes.secret_data_bytes(n, m) for m, n in ALL_SHAPES if m >= MIN_THRESHOLDS[n]
    ) == shapes.secret_data_bytes(12, 6)


@pytest.mark.parametrize(
    ("threshold", "most"),
    [(1, 11), (2, 11), (5, 11), (6, 12), (8, 12), (9, 13), (10, 14), (11, 14), (12, 15), (13, 16), (16, 16)],
)
def test_max_participants_for(threshold: int, most: int) -> None:
    assert shapes.max_participants_for(threshold, MIN_THRESHOLDS) == most


def test_min_threshold_refuses_an_impossible_budget() -> None:
    with pytest.raises(ValueError, match="no threshold"):
        shapes.min_threshold(3, budget=1000)

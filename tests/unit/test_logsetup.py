"""The operator's log drops kopf's per-event success lines of its watch-event handlers, nothing else."""

from __future__ import annotations

import logging

import pytest

from escrow_operator.logsetup import WatchEventSuccessFilter


def record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)


@pytest.mark.parametrize("handler", ["escrow_event", "pool_pod_event"])
def test_success_of_a_watch_event_handler_is_dropped(handler: str) -> None:
    assert not WatchEventSuccessFilter().filter(record(f"Handler '{handler}' succeeded."))


@pytest.mark.parametrize(
    "message, level",
    [
        ("Handler 'reconcile_pool' succeeded.", logging.INFO),
        ("Daemon 'run_escrow' succeeded.", logging.INFO),
        ("Handler 'escrow_event' failed with an exception and will try again in 60 seconds: boom", logging.ERROR),
        ("Handler 'escrow_event' succeeded.", logging.WARNING),
    ],
)
def test_every_other_line_stays(message: str, level: int) -> None:
    assert WatchEventSuccessFilter().filter(record(message, level))


def test_the_filter_works_on_the_kopf_objects_logger(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("kopf.objects.test")
    logger.addFilter(WatchEventSuccessFilter())
    try:
        with caplog.at_level(logging.INFO, logger="kopf.objects.test"):
            logger.info("Handler 'escrow_event' succeeded.")
            logger.info("Handler 'reconcile_pool' succeeded.")
    finally:
        logger.filters.clear()
    assert [r.getMessage() for r in caplog.records] == ["Handler 'reconcile_pool' succeeded."]

"""The operator's logging: one format, quiet HTTP libraries, and no line per watch event.

kopf logs "Handler '…' succeeded." at INFO after every call of an event-watching handler. The
operator's two such handlers (:func:`~escrow_operator.handlers.escrow_event`,
:func:`~escrow_operator.handlers.pool_pod_event`) run on every change of every Escrow and pool pod,
so those lines would be most of the log under load and say nothing; they are dropped. Their
failures, and every other handler's lines, stay.
"""

from __future__ import annotations

import logging

QUIET_LIBRARIES = ("httpx", "httpcore", "kubernetes", "urllib3")
WATCH_EVENT_HANDLERS = ("escrow_event", "pool_pod_event")


class WatchEventSuccessFilter(logging.Filter):
    """Drops kopf's INFO "Handler 'NAME' succeeded." for the watch-event handlers named."""

    def __init__(self, handlers: tuple[str, ...] = WATCH_EVENT_HANDLERS) -> None:
        super().__init__()
        self._messages = frozenset(f"Handler {name!r} succeeded." for name in handlers)

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and record.getMessage() in self._messages)


def configure_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    if not verbose:
        logging.getLogger("kopf.objects").addFilter(WatchEventSuccessFilter())

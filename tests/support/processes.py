"""Local processes (free port, wait until serving, stop): moved to :mod:`hack.testground.processes`."""

from hack.testground.processes import NOT_YET, free_port, stop, wait_serving

__all__ = ["NOT_YET", "free_port", "stop", "wait_serving"]

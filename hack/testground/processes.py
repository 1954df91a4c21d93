"""Helpers for the local processes tests start themselves: a free port, waiting until one serves,
stopping one."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable

import httpx

NOT_YET: tuple[type[Exception], ...] = (OSError, httpx.TransportError)


#: Ports this process handed out: the kernel may give a port just closed to the next bind, so two
#: calls in a row (a metrics port and a liveness port for one process) could otherwise collide.
_given: set[tuple[str, int]] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at ``host`` right now, never one this process handed out before."""
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if (host, port) not in _given:
            _given.add((host, port))
            return port


def wait_serving(
    proc: subprocess.Popen[bytes],
    answers: Callable[[], bool],
    *,
    what: str,
    timeout: float = 30,
    interval: float = 0.1,
    detail: Callable[[], str] = lambda: "",
    not_yet: tuple[type[Exception], ...] = NOT_YET,
) -> None:
    """Call ``answers`` until it returns True; fail if ``proc`` exits first or ``timeout`` passes.

    A starting process signals nothing when it begins to serve, so this polls. An exception in
    ``not_yet`` (by default a refused or reset connection) means "not yet"; any other propagates.
    ``detail`` adds e.g. the process's log to the failure."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if answers():
                return
        except not_yet:
            pass
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode} before it served. {detail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not serve within {timeout:g} s. {detail()}")
        time.sleep(interval)


def stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within ``timeout``; reaps it either way."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

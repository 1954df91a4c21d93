"""Process helpers: liveness, stopping by PID, dying with the parent."""

from __future__ import annotations

import ctypes
import os
import signal
import time

PR_SET_PDEATHSIG = 1


def pdeathsig_preexec() -> None:
    """In a child before exec: get SIGKILL when the parent thread dies, so nothing outlives its starter."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_pids(pids: list[int], grace: float = 10.0) -> None:
    """SIGTERM each process group in order, wait up to ``grace`` for each, then SIGKILL what is left."""
    for pid in pids:
        if not pid_alive(pid):
            continue
        _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while pid_alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.05)  # waiting for a process that is not our child to exit
        if pid_alive(pid):
            _signal(pid, signal.SIGKILL)
        _reap(pid)


def _signal(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # every process is started as the leader of its own session
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(pid, sig)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass

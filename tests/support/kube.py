"""Waiting on the real apiserver: moved to :mod:`hack.testground.kube` (the benchmark uses it too)."""

from hack.testground.kube import Timeout, container_pid, custom_objects, pod_ready, wait_for, wait_gone

__all__ = ["Timeout", "container_pid", "custom_objects", "pod_ready", "wait_for", "wait_gone"]

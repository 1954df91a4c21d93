"""Fixtures of the real test ground: a control plane built from source and pods run as processes."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # hack.devcluster

from hack.devcluster import DevCluster, Ports  # noqa: E402


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    """etcd + kube-apiserver + kube-controller-manager + the process kubelet, for the whole session."""
    state = tmp_path_factory.mktemp("devcluster")
    dev = DevCluster(state, Ports.find_free(), tie_to_parent=True).start()
    try:
        yield dev
    finally:
        dev.stop()


@pytest.fixture(scope="session")
def kube(cluster: DevCluster) -> client.ApiClient:
    """An admin client of the test ground's apiserver."""
    return config.new_client_from_config(str(cluster.kubeconfig))


def _namespace(kube: client.ApiClient) -> Iterator[str]:
    name = f"t-{secrets.token_hex(4)}"
    core = client.CoreV1Api(kube)
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def namespace(kube: client.ApiClient) -> Iterator[str]:
    """A fresh namespace per test."""
    yield from _namespace(kube)


@pytest.fixture(scope="module")
def module_namespace(kube: client.ApiClient) -> Iterator[str]:
    """A namespace shared by the tests of one module (for expensive setups such as a 6-pod pool)."""
    yield from _namespace(kube)

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from escrow_operator.api import DEFAULT_IMAGE, DEFAULT_OPERATOR_IMAGE
from escrow_operator.api.walletpool import PREVIOUS_IMAGE
from hack.devcluster import DevCluster
from hack.testground.chain import Chain, Miner, miner, start_chain
from tests.support.commands import helm_environment
from tests.support.operator import OperatorProcess, install_crds

#: The default images, the previous wallet-rpc (it exits on a regtest pool's flag) and one the
#: process kubelet does not have (a pool whose pods never get ready).
TEST_ALLOWED_IMAGES = f"{DEFAULT_IMAGE},{PREVIOUS_IMAGE},{DEFAULT_OPERATOR_IMAGE},registry.invalid/never:1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = str(config.rootpath / "tests" / "integration")
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def crds(kube: client.ApiClient) -> None:
    """The project's CRDs, installed once per session."""
    install_crds(kube)


@pytest.fixture(scope="module")
def operator(cluster: DevCluster, crds: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The operator as its own process (one per test module), with the admin kubeconfig."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    env = {"ESCROW_RECORD_STEP_HISTORY": "true", "ESCROW_ALLOWED_IMAGES": TEST_ALLOWED_IMAGES}
    proc = OperatorProcess(Path(cluster.kubeconfig), log, env=env).start()
    try:
        yield proc
    finally:
        proc.stop()


def start_operator(cluster: DevCluster, log: Path, **env: str) -> OperatorProcess:
    """An operator of a test's own (some with fault points), allowed the test images."""
    return OperatorProcess(
        Path(cluster.kubeconfig), log, env={"ESCROW_ALLOWED_IMAGES": TEST_ALLOWED_IMAGES, **env}
    ).start()


@pytest.fixture(scope="module")
def chain(kube: client.ApiClient, module_namespace: str) -> Chain:
    """A regtest monerod pod in the module's namespace (hack/testground/chain.py)."""
    return start_chain(kube, module_namespace)


@pytest.fixture(scope="module")
def wallet(chain: Chain) -> Iterator[Miner]:
    """A miner wallet of the module's own on ``chain``, with mature coinbase outputs to pay from."""
    with miner(chain) as m:
        yield m


@pytest.fixture(scope="module")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """helm keeps its caches and config under a temporary home, not the user's."""
    return helm_environment(tmp_path_factory.mktemp("helm-home"))

"""walletfs: the sidecar that copies, publishes and deletes escrow wallet files in a pool pod.

* :mod:`.files`  - the file operations (no HTTP), testable alone;
* :mod:`.server` - the aiohttp sidecar (``escrow-operator walletfs ...`` calls :func:`.server.main`);
* :mod:`.client` - the async httpx client the operator uses.
"""

from escrow_operator.walletfs.client import (
    PublishResult,
    WalletfsClient,
    WalletfsError,
    WalletfsUnavailable,
)
from escrow_operator.walletfs.files import FileInfo, WalletEntry, WalletStat

__all__ = [
    "FileInfo",
    "PublishResult",
    "WalletEntry",
    "WalletStat",
    "WalletfsClient",
    "WalletfsError",
    "WalletfsUnavailable",
]

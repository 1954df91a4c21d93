"""The embedded dev cluster: a real control plane built from source, and a kubelet that runs pods as processes."""

from .controlplane import DevCluster, Ports, bin_dir, binary
from .errors import DevClusterError

__all__ = ["DevCluster", "DevClusterError", "Ports", "bin_dir", "binary"]

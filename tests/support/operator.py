"""The operator as a real process against the test ground: moved to :mod:`hack.testground.operator`."""

from hack.testground.operator import CRDS, ROOT, OperatorProcess, install_crds

__all__ = ["CRDS", "ROOT", "OperatorProcess", "install_crds"]

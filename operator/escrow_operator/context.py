"""What every handler and engine of the operator shares: the API client, the pools, the settings."""

from __future__ import annotations

from dataclasses import dataclass

from .faults import NONE as NO_FAULTS
from .faults import Faults
from .kube import Kube
from .pools import Pools
from .settings import OperatorSettings


@dataclass
class Context:
    kube: Kube
    pools: Pools
    settings: OperatorSettings
    faults: Faults = NO_FAULTS

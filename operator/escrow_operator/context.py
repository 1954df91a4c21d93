"""What every handler and engine of the operator shares: the API client, the pools, the settings, the chains."""

from __future__ import annotations

from dataclasses import dataclass

from .blocks import Chains
from .chainwatch import ChainWatches
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
    chains: Chains
    watches: ChainWatches
    faults: Faults = NO_FAULTS
    #: Since when payouts keep their records in the operator's namespace (payout_secret.records_since);
    #: "" until known: then no payout counts as ended under an earlier release.
    records_since: str = ""

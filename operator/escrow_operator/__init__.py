"""xmr-escrow-operator: Monero multisig escrow wallets on Kubernetes."""

__version__ = "0.1.0"

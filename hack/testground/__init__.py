"""The test ground's helpers, shared by the test suite and the benchmark: Escrows and WalletPools,
waiting on the apiserver by watch, the operator as a process, local processes.

They live under hack/ because hack/ must not import the tests (``make lint`` checks it); the tests'
support package re-exports them under their old names."""

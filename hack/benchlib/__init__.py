"""The pieces of ``hack/bench``: the dev-cluster harness, the operator policy, the emulated seed
policy, the restart scale check, figures from logs and processes, and the printed report.

A benchmark measures; nothing in here asserts anything about the figures.
"""

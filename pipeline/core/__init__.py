"""The contract every layer shares: records, dataset directories, errors, defaults.

It imports nothing else of ours, so any layer may use it.
"""

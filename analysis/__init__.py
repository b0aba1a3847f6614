"""Analysis library: layout statistics, grid score, audit gate, metrics, reports.

Independent of trainer and detectors, as the import-linter contracts require.
"""

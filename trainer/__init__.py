"""Training library: models, adapters, data, the loop, generation.

Independent of analysis and detectors, as the import-linter contracts require.
"""

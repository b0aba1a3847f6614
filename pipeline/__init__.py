"""groundset's own code: the CLI and its commands, the stages, and the contract (core).

Imports point one way, downwards (pyproject.toml, [tool.importlinter]).
"""

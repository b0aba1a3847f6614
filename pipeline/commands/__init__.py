"""CLI commands, one module per command, named as the CLI names it; each exposes ``register(app)``."""

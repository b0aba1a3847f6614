"""CLI commands, one module per stage family; each exposes ``register(app)``."""

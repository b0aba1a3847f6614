"""Keep diffusers' and transformers' own chatter out of groundset's output.

Their progress bars and per-cast warnings would drown a DVC log; a separate module so
that the model folder writers and the model loader can share it without a cycle.
"""

from __future__ import annotations

import contextlib


def quiet_libraries() -> None:
    """``groundset --quiet`` also silences diffusers' and transformers' own progress bars."""
    from pipeline.core.progress import quiet

    if quiet():
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()


@contextlib.contextmanager
def quiet_cast():
    """diffusers warns on every dtype cast of a model; SD1.x UNets/VAEs keep no fp32 modules."""
    from diffusers.utils import logging as diffusers_logging

    logger = diffusers_logging.get_logger("diffusers.models.modeling_utils")
    level = logger.level
    logger.setLevel(diffusers_logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)

"""User-facing errors.

Every mistake a user can make (a missing file, a malformed input, a failed gate) is
raised as a ``UserError`` so that the CLI prints exactly one line and exits with the
code the design promises (2 for bad input, 3 for a failed audit gate), never a
traceback. This module is a leaf: any package may import it.
"""


class UserError(Exception):
    """An error caused by the user's input, reported as one line on stderr."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class GateFailed(UserError):
    """The audit gate rejected the dataset; DVC must stop before training."""

    exit_code = 3

"""One error type for everything a user can get wrong.

The CLI prints ``str(error)`` as a single line and exits with status 2; library users
catch :class:`AdvexError` (a ``ValueError``, so ``except ValueError`` keeps working).
"""

from __future__ import annotations


class AdvexError(ValueError):
    """A user-facing error: the message names what was wrong and what is accepted."""

"""One error type for everything a user can get wrong, and one warning type.

The CLI prints ``str(error)`` as a single line and exits with status 2; library users
catch :class:`AdvexError` (a ``ValueError``, so ``except ValueError`` keeps working).
"""

from __future__ import annotations


class AdvexError(ValueError):
    """A user-facing error: the message names what was wrong and what is accepted."""


class AdvexWarning(UserWarning):
    """Something is probably wrong (eps in 0-255 units, a model returning probabilities),
    but a result can still be computed."""

"""What a verb raises for a user mistake: ``zoo.cli`` prints it as one ``zoo: error: ...`` line and exits 2."""

from __future__ import annotations

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake the user can fix; the message names the problem and the fix, in one line."""

"""The zoo's one base error type, and the exit code the ``zoo`` command gives it.

Every mistake a user can fix (an unknown model, a bad card, a checkpoint that does not fit, a dataset or run folder
that is not what the command needs, a bad flag value) raises a subclass of :class:`ZooError` whose message names the
problem and the fix in one line. ``attnzoo.cli`` prints any ``ZooError`` as ``zoo: error: <message>`` and exits with
:data:`EXIT_USER_ERROR`, so a new verb with a new error type never edits the CLI. Bugs raise anything else and keep
their traceback.
"""

from __future__ import annotations

__all__ = ["EXIT_USER_ERROR", "UserError", "ZooError"]

EXIT_USER_ERROR = 2


class ZooError(Exception):
    """A mistake the user can fix; the message names the problem and the fix."""


class UserError(ZooError):
    """A bad argument or input given to a verb (the generic ``ZooError`` for the command line)."""

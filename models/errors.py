"""The one exception type for bad user input (configs, data files, checkpoints, CLI flags).

Raise :class:`UserError` with a one-line message that names the field or file at fault; the CLI
prints it as ``peftsweep: error: <message>`` and exits with status 2. Anything else is a bug and
keeps its traceback.
"""

__all__ = ["UserError"]


class UserError(ValueError):
    """Bad input the user can fix. The message is one line and names the field or file."""

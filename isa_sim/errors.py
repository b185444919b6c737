"""The simulator's user-facing error."""


class SimError(Exception):
    """A binary, its inputs or its execution is invalid (message is one line)."""

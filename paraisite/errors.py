"""Errors the user can act on: raised with one line naming the file/record and the reason."""


class ParaisiteError(Exception):
    """Base class for errors reported to the user as a one-line message (no traceback)."""


class DataError(ParaisiteError):
    """Bad or missing input data."""


class ConfigError(ParaisiteError):
    """A config key or value that cannot be used (unknown key, wrong type, out of range)."""

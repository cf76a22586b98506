"""Errors that users see: each names the input and the reason, and the CLI prints them without a traceback."""


class RagindexError(Exception):
    """An expected failure caused by input or settings, reported as one clear line."""


class SettingsError(RagindexError):
    """A setting is out of range or inconsistent with another one."""


class SourceError(RagindexError):
    """The corpus location cannot be read, is empty, or is not what was expected."""


class IndexDirError(RagindexError):
    """An index directory is missing, incomplete or was built with other settings."""

"""Errors that users see: each names the input and the reason, and the CLI prints them without a traceback.

Every expected failure is a ``RagindexError``, so a caller (the CLI, an Airflow task) catches one family.
``retryable`` tells an orchestrator whether running the same step again could succeed: a bad setting or
an empty corpus never will (fail at once), a registry that did not answer might.
"""


class RagindexError(Exception):
    """An expected failure caused by input or settings, reported as one clear line."""

    retryable = False


class SettingsError(RagindexError):
    """A setting is out of range or inconsistent with another one."""


class SourceError(RagindexError):
    """The corpus location cannot be read, is empty, or is not what was expected."""


class SourceUnavailable(SourceError):
    """The corpus's storage could not be reached or did not answer; trying again later may work."""

    retryable = True


class IndexDirError(RagindexError):
    """An index directory is missing, incomplete or was built with other settings."""


class RegistryError(RagindexError):
    """A registry operation failed: the message names the ref or URI and the reason."""


class RegistryUnavailable(RegistryError):
    """The registry could not be reached or did not answer; trying again later may work."""

    retryable = True


class ConcurrentMove(RegistryUnavailable):
    """Another move of a governed alias came between a decision's checks and its move (the compare-and-set
    found another holder): nothing was moved, and running the step again checks anew against the new holder."""


class ArtifactNotFound(RegistryError, KeyError):
    """A ref (``name:vN`` or ``name:alias``) that names no version."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "artifact not found"


class GovernanceError(RagindexError):
    """A promotion, review or rollback that the governance rules refuse (the message says which rule)."""

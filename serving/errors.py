"""User-facing error types.

Every error a user can cause (bad config, bad file, missing dependency, tampered bundle) is one of
these. The CLI turns them into a single line and exit code 2; anything else is a bug and keeps its
traceback.
"""


class KerasmedError(Exception):
    """Base class of every error caused by user input rather than a bug."""


class ConfigError(KerasmedError, ValueError):
    """A configuration key or value is unknown or invalid."""


class DataError(KerasmedError, ValueError):
    """An input file or folder is missing, corrupt, truncated or of the wrong shape."""


class BundleError(KerasmedError):
    """A model bundle is incomplete, or an artefact does not match its recorded sha256."""


class DependencyError(KerasmedError, ImportError):
    """An optional dependency needed for this operation is not installed."""


class ParityError(KerasmedError):
    """An exported artefact does not reproduce the Keras model within tolerance."""

"""User-facing errors: the CLI prints their message as one line and exits non-zero."""

from __future__ import annotations


class TacfnError(Exception):
    """Base class for errors a user can fix (bad input, missing files)."""


class ConfigError(TacfnError, ValueError):
    """A configuration file or option is invalid."""


class DataError(TacfnError):
    """A dataset folder or file is missing, malformed or unreadable."""


class MediaError(DataError):
    """One media file cannot be decoded or is too short; preparation skips it."""

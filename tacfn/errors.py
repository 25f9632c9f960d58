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


def brief(exc: BaseException) -> str:
    """An exception's first sentence on one line, at most 200 characters (its type if it has
    no message): for one-line errors that quote a library's exception."""
    return " ".join(str(exc).split()).split(". ")[0][:200] or type(exc).__name__

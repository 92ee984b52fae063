"""Errors that the CLI reports as one clear line and a non-zero exit (no traceback)."""

from __future__ import annotations


class WizardcoderError(Exception):
    """Base class: the message is meant for the user as is."""

    exit_code = 2


class ConfigError(WizardcoderError):
    """A params.yaml section, key or value is wrong."""


class DataError(WizardcoderError):
    """A data file is malformed; names the file, the line and the field."""

    def __init__(self, path, line: int | None, field: str | None, message: str):
        self.path, self.line, self.field = str(path), line, field
        where = self.path if line is None else f"{self.path}:{line}"
        what = f" field {field!r}:" if field else ""
        super().__init__(f"{where}:{what} {message}")


class ExternalError(WizardcoderError):
    """Something outside the project failed (a server, a download, a model load)."""

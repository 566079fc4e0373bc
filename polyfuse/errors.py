"""User-facing errors. The CLI prints these without a traceback and exits with status 2."""

from __future__ import annotations


class PolyfuseError(Exception):
    """Base of the errors caused by the user's input (config, data, checkpoint), not by a bug."""


class ConfigError(PolyfuseError, ValueError):
    """A config value is wrong; the message names the key path and what is allowed.

    A module raises it naming its own parameter (``dim: must be positive``); the builder adds the
    key path (``model.fusion.dim: ...``).
    """


class DataError(PolyfuseError):
    """Bad data, located as precisely as known: file, row (0-based data row), column."""

    def __init__(self, message: str, file: str | None = None, row: int | None = None, column: str | None = None):
        self.file, self.row, self.column, self.reason = file, row, column, message
        where = []
        if file is not None:
            where.append(str(file))
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class CheckpointError(PolyfuseError):
    """A checkpoint directory is missing, half written, or not a polyfuse checkpoint."""


class MissingPackageError(PolyfuseError):
    """An optional package (data, weights, extra) is not installed; the message says what to install."""

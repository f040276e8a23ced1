"""User-facing errors: the CLI prints their message as one line and exits non-zero."""
from __future__ import annotations


class MrsynthError(Exception):
    """A user mistake or bad input; the message names the file or key and the problem."""


class ConfigError(MrsynthError):
    """Invalid configuration (unknown key, wrong type, impossible combination)."""


class DataError(MrsynthError):
    """Bad input data: missing/unreadable/non-NIfTI files, wrong dimensionality, NaNs, ..."""


class CheckpointError(MrsynthError):
    """A checkpoint or portable weight file that is missing, corrupt or does not match the model."""


class TrainingDiverged(MrsynthError):
    """The loss became NaN/Inf; the last good checkpoint is kept."""


class Interrupted(Exception):
    """SIGINT/SIGTERM stopped a command after it saved what it could; exit 128 + the signal number."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code

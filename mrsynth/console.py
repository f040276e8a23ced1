"""What a command shows on the terminal: log messages and progress bars.

Messages go through Python ``logging`` (logger ``mrsynth`` and its children) so that a run's
text log and the terminal get the same lines; on the terminal they are written above any
progress bar (a bare print would split the bar). ``-q`` shows warnings and errors only, ``-v``
adds debug lines; ``--no-progress`` (or ``-q``) turns every progress bar off.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator

from tqdm.auto import tqdm

LOGGER_NAME = "mrsynth"
_progress = contextvars.ContextVar("mrsynth_progress", default=True)


def progress_enabled() -> bool:
    """Whether long jobs draw progress bars (False under ``--no-progress`` or ``-q``)."""
    return _progress.get()


def console_level(quiet: bool, verbose: int) -> int:
    """The lowest level shown on the terminal: WARNING with -q, DEBUG with -v, else INFO."""
    if quiet:
        return logging.WARNING
    return logging.DEBUG if verbose else logging.INFO


class _TerminalHandler(logging.Handler):
    """Writes each message on its own line above the progress bars, to the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def logging_to(handler: logging.Handler) -> Iterator[None]:
    """Send mrsynth's messages to ``handler`` (at the handler's own level) while inside, and only
    there: not also up to the root logger, where a library (orbax, absl) may have installed a
    handler of its own that would print every message again, debug lines included."""
    logger = logging.getLogger(LOGGER_NAME)
    previous, propagated = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG)  # each handler filters by its own level
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        logger.propagate = propagated
        handler.close()


@contextlib.contextmanager
def terminal(level: int, progress: bool) -> Iterator[None]:
    """One command's terminal: messages from ``level`` up on stderr, progress bars on or off."""
    handler = _TerminalHandler(level)
    handler.setFormatter(logging.Formatter("%(message)s"))
    token = _progress.set(progress)
    try:
        with logging_to(handler):
            yield
    finally:
        _progress.reset(token)

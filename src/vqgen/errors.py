"""Errors that vqgen raises for what it cannot do, each with a message that says what and how to fix it.

Two exit codes, as the CLI reports them: `UsageError` and its kinds mean the
user asked for something that cannot work (exit 2); `RunError` and its kinds
mean a run failed while doing what was asked (exit 1). The named kinds say
which part of the outside world was at fault, so code can catch them:

    VQGenError
      UsageError (2)       a setting, option or path that cannot work
        DatasetError       a dataset that cannot be read as asked
        OutputPathError    an output path that is unusable or would overwrite an input
      RunError (1)         a run that failed
        CheckpointError    damaged weights, resume state or metadata
        DownloadError      the Hugging Face Hub could not be reached
        NonFiniteLoss      training diverged

Messages name the library's parameters between backticks ("`steps` must be at
least 2"). `str(error)` drops the backticks; the command line replaces each
name with its flag ("--steps must be at least 2"), so the library and the CLI
never word the same error twice.
"""

from __future__ import annotations

import re

PARAM = re.compile(r"`([a-z][a-z0-9_]*)`")


class VQGenError(Exception):
    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return PARAM.sub(r"\1", self.message)

    def render(self, name_for) -> str:
        """The message with each `param` replaced by `name_for(param)` (a flag, say)."""
        return PARAM.sub(lambda m: name_for(m.group(1)), self.message)


class UsageError(VQGenError, ValueError):
    """Also a ValueError, so Python callers can catch bad arguments the usual way."""
    exit_code = 2


class DatasetError(UsageError):
    """A dataset folder, file or Hub dataset that cannot be read as asked."""


class OutputPathError(UsageError):
    """An output path that cannot be written, or would overwrite an input."""


class RunError(VQGenError):
    exit_code = 1


class CheckpointError(RunError):
    """Weights, resume state or metadata that are damaged or from elsewhere."""


class DownloadError(RunError):
    """The Hugging Face Hub could not be reached."""


class NonFiniteLoss(RunError):
    """Training produced NaN or infinity."""

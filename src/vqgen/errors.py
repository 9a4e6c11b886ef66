"""Errors that the CLI turns into one line on stderr.

`UsageError` means the user asked for something that cannot work (exit 2);
`RunError` means a run failed while doing what was asked (exit 1).
Both carry a message that says what was wrong and how to fix it.
"""


class VQGenError(Exception):
    exit_code = 1


class UsageError(VQGenError):
    exit_code = 2


class RunError(VQGenError):
    exit_code = 1

"""fitgap's one error family: every error a user may meet says what to do, in one line, with its exit code.

- `UsageError` (exit 2): the input is wrong — a spec, an option, a store URL, a study name, a query. Raised before
  anything is written, so a corrected command starts from the same state.
- `RunError` (exit 1): a launch stopped part-way (the tracking process died, an executor cannot start). What was
  written is consistent: trials not yet recorded stay RUNNING, and the next launch fails and retries them.

The CLI prints `fitgap: error: <message>` and exits with `exit_code`; anything else is a bug and keeps its traceback.
Whatever reaches a terminal or a log passes `scrub` first: a library's message may quote a URL with its password.
"""

from __future__ import annotations

import re

_PASSWORD_IN_URL = re.compile(r"(?P<head>\b[a-zA-Z][\w+.-]*://[^\s/:@]*:)[^\s/@]+@")
_PASSWORD_PARAMETER = re.compile(r"(?P<head>[?&]password=)[^&\s'\"]+", re.IGNORECASE)


def scrub(text: str) -> str:
    """`text` with the password of every URL in it (`scheme://user:password@`, `?password=`) replaced by ***."""
    return _PASSWORD_PARAMETER.sub(r"\g<head>***", _PASSWORD_IN_URL.sub(r"\g<head>***@", text))


def one_line(error: BaseException, width: int = 300) -> str:
    """An exception as a reason or a message quotes it: its type and the first line of its message, scrubbed."""
    lines = str(error).strip().splitlines()
    return scrub(f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__)[:width]


class FitgapError(Exception):
    exit_code = 1


class UsageError(FitgapError):
    exit_code = 2


class RunError(FitgapError):
    exit_code = 1

"""fitgap's one error family: every error a user may meet says what to do, in one line, with its exit code.

- `UsageError` (exit 2): the input is wrong — a spec, an option, a store URL, a study name, a query. Raised before
  anything is written, so a corrected command starts from the same state.
- `RunError` (exit 1): a launch stopped part-way (the tracking process died, an executor cannot start). What was
  written is consistent: trials not yet recorded stay RUNNING, and the next launch fails and retries them.

The CLI prints `fitgap: error: <message>` and exits with `exit_code`; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class FitgapError(Exception):
    exit_code = 1


class UsageError(FitgapError):
    exit_code = 2


class RunError(FitgapError):
    exit_code = 1

"""Coordinator side: Optuna's journal file, the Optuna storage of a workspace that one coordinator holds alone.

Optuna's `JournalStorage` keeps the study in memory and appends each change to the file as a line of JSON: fitgap's
writes of a trial cost 1.1 ms there, 16.6 ms as transactions of the RDB storage on SQLite in WAL mode
(`bench/storage.py`, 2026-12-04).
`optuna.load_study(storage=JournalStorage(JournalFileBackend(path)))` and `optuna-dashboard PATH` read it.

Appends are not synced to the disk, as SQLite's `synchronous=NORMAL` syncs no commit (`fitgap/sqlite.py`): a crash of
any process loses nothing written, a power cut may lose the last writes (their trials are retried by the next
launch). An fsync per write, as Optuna's backend does, was three quarters of that cost (4.8 ms a trial).
"""

from __future__ import annotations

import json
import os

from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

SUFFIXES = (".journal", ".log")  # a `--storage` path that names a journal file (Optuna's examples use .log)


class JournalFile(JournalFileBackend):
    """Optuna's file backend, which never leaves half a line behind: Optuna refuses to read a journal with a broken
    line before its end ("Invalid log format"), so one append that failed part-way (a full disk, a writer killed
    mid-write) followed by any other would lose the whole study."""

    def append_logs(self, logs: list[dict]) -> None:
        text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode()
        self._lock.acquire()
        try:
            with open(self._file_path, "rb+") as file:
                size = _whole_lines(file)
                file.seek(size)
                try:  # no fsync (Optuna's has one, ~0.35 ms a write): see the module's docstring
                    file.write(text)
                    file.flush()
                except OSError:
                    file.truncate(size)  # frees what the failed write took
                    raise
        finally:
            self._lock.release()


def _whole_lines(file) -> int:
    """The file's size up to its last complete line, cutting what a writer killed mid-append left after it (no
    reader takes a line without its newline, so it was never part of the study)."""
    end = file.seek(0, os.SEEK_END)
    if end == 0 or os.pread(file.fileno(), 1, end - 1) == b"\n":
        return end
    start = end
    while start > 0:
        begin = max(0, start - 65536)
        newline = os.pread(file.fileno(), start - begin, begin).rfind(b"\n")
        if newline >= 0:
            start = begin + newline + 1
            break
        start = begin
    file.truncate(start)
    return start


def open_journal(path) -> JournalStorage:
    return JournalStorage(JournalFile(str(path)))

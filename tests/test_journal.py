"""Optuna's journal file as the workspace's Optuna storage (`studies/journal.py`): faults leave it readable by Optuna's
own classes, and workspaces made before it keep their SQLite storage."""

from __future__ import annotations

import contextlib
import resource
import signal

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from fitgap.studies.journal import JournalFile
from fitgap.studies.stores import StoreError, Stores
from fitgap.studies.study import load_study

from conftest import fitgap, snapshot


@contextlib.contextmanager
def file_size_cap(size: int):
    """Writes past `size` bytes fail (EFBIG) as they would on a full disk."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def write_past_the_cap(backend, path) -> None:
    study = optuna.create_study(storage=JournalStorage(backend), study_name="s")
    study.set_user_attr("kept", 1)
    with file_size_cap(path.stat().st_size + 100), pytest.raises(OSError):
        study.set_user_attr("refused", "x" * 1000)
    study.set_user_attr("after", 2)
    study.set_user_attr("later", 3)


def test_an_append_that_fails_part_way_leaves_no_half_line(tmp_path):
    path = tmp_path / "optuna.journal"
    write_past_the_cap(JournalFile(str(path)), path)
    study = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))
    assert study.user_attrs == {"kept": 1, "after": 2, "later": 3}


def test_optunas_own_file_backend_loses_the_study_to_the_half_line(tmp_path):
    """Why `JournalFile` exists: the same writes through Optuna's backend break the study for every reader."""
    path = tmp_path / "optuna.journal"
    with pytest.raises(ValueError):  # json's "Expecting ':' delimiter", from the half line
        write_past_the_cap(JournalFileBackend(str(path)), path)
    with pytest.raises(ValueError):
        JournalStorage(JournalFileBackend(str(path)))


def test_what_a_writer_killed_mid_append_left_is_cut_by_the_next_append(tmp_path):
    path = tmp_path / "optuna.journal"
    study = optuna.create_study(storage=JournalStorage(JournalFile(str(path))), study_name="s")
    with open(path, "ab") as journal:
        journal.write(b'{"op_code":5,"worker_id":"killed","study_id":0,"user_attr":{"half')
    study.set_user_attr("after", 2)
    assert optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path)))).user_attrs == {
        "after": 2}


def test_a_new_workspace_keeps_its_study_in_a_journal_and_an_earlier_one_its_sqlite_database(tmp_path):
    assert Stores.resolve(workspace=tmp_path / "new").storage == str(tmp_path / "new" / "optuna.journal")
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    optuna.create_study(storage=f"sqlite:///{earlier / 'optuna.db'}", study_name="old")
    stores = Stores.resolve(workspace=earlier)
    assert stores.storage == f"sqlite:///{earlier / 'optuna.db'}" and stores.exclusive
    assert fitgap("studies", "--workspace", str(earlier)).stdout.startswith("old\t")


def test_a_journal_path_is_a_storage_and_other_paths_are_refused_in_one_line(tmp_path):
    journal = tmp_path / "mine.log"
    optuna.create_study(storage=JournalStorage(JournalFileBackend(str(journal))), study_name="theirs")
    listed = fitgap("studies", "--storage", str(journal), "--workspace", str(tmp_path / "ws"))
    assert listed.returncode == 0 and listed.stdout.startswith("theirs\t"), listed.stderr
    before = snapshot(tmp_path)
    refused = fitgap("launch", "sweeps/specs/dot.yaml", "--storage", str(tmp_path / "mine.db"),
                     "--workspace", str(tmp_path / "ws"))
    assert (refused.returncode, refused.stderr) == (
        2, f"fitgap: error: `--storage`: not a database URL or an Optuna journal file (.journal, .log): "
           f"{tmp_path / 'mine.db'}\n")
    assert snapshot(tmp_path) == before


def test_stores_missing_says_so_without_creating_the_journal(tmp_path):
    stores = Stores.resolve(workspace=tmp_path / "ws")
    assert stores.missing() == [str(tmp_path / "ws" / "optuna.journal")]
    with pytest.raises(StoreError, match="no studies yet"):
        load_study("any", stores)
    assert not (tmp_path / "ws").exists()

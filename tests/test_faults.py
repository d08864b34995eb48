"""Faults survived, with real processes and real signals: dying executors, a killed coordinator, Ctrl-C, `fitgap
stop`, timeouts, pruning, a second coordinator on one SQLite workspace, and GPU pinning with fake GPUs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from mlflow import MlflowClient

from fitgap.studies.stores import Stores
from fitgap.studies.study import open_storage
from fitgap.tracking.results import ResultsDB

from conftest import ROOT, fitgap, journal_storage

pytestmark = pytest.mark.tensorflow

# Fast heartbeats so that a killed coordinator's trials go stale in seconds, not minutes.
BEAT = {"FITGAP_HEARTBEAT_S": "1", "FITGAP_GRACE_S": "4"}


def spec_text(name: str, epochs: int, trials: int, extra: str = "") -> str:
    """One trial per executor at a time (the keras executor): these tests are about orchestration."""
    return (f"name: {name}\ndataset: {{name: dot}}\nmodel: {{hidden: [4]}}\nepochs: {epochs}\ntrials: {trials}\n"
            f"executor: keras\n"
            f"objective: [{{metric: val_accuracy}}]\nsampler: random\nseed: 3\n"
            f"search:\n  learning_rate: {{type: float, low: 0.01, high: 0.3, log: true}}\n{extra}")


@pytest.fixture
def study(workspace, tmp_path):
    """Write a spec, start launches, and read the three stores back."""

    class Study:
        stores = Stores.resolve(workspace=workspace)

        def spec(self, text: str):
            path = tmp_path / "spec.yaml"
            path.write_text(text)
            return path

        def start(self, spec, *args, env=None):
            environment = {k: v for k, v in os.environ.items() if not k.startswith(("FITGAP_", "MLFLOW_"))}
            environment.update(env or {})
            return subprocess.Popen([sys.executable, "-m", "fitgap.studies.cli", "launch", str(spec), "--workspace",
                                     str(workspace), "--cpu-slots", "1", *args], cwd=ROOT, env=environment,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    start_new_session=True)

        def trials(self, name):
            try:
                return optuna.load_study(study_name=name, storage=open_storage(self.stores.storage)).get_trials()
            except KeyError:
                return []

        def mlflow_runs(self, name):
            client = MlflowClient(tracking_uri=self.stores.tracking_uri)
            experiment = client.get_experiment_by_name(name)
            return client.search_runs([experiment.experiment_id])

        def results(self, name):
            return {row["number"]: row for row in ResultsDB(self.stores.results_url).trials(name)}

    yield Study()
    assert_sound(Study.stores)  # after every scenario, whatever it did


def assert_sound(stores: Stores) -> None:
    """What fitgap promises after any fault, once the launches have returned: no Optuna trial, MLflow run or results
    row left RUNNING, every COMPLETE trial with its FINISHED MLflow run and its COMPLETE results row, and the three
    SQLite databases passing their integrity check (Optuna's journal, whole lines that Optuna reads)."""
    import sqlite3

    if stores.missing():
        return
    storage = open_storage(stores.storage)
    client = MlflowClient(tracking_uri=stores.tracking_uri)
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        name = summary.study_name
        trials = optuna.load_study(study_name=name, storage=storage).get_trials()
        assert not running(trials), (name, [t.number for t in running(trials)])
        experiment = client.get_experiment_by_name(name)
        runs = {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])} if experiment else {}
        assert all(r.info.status != "RUNNING" for r in runs.values()), name
        rows = {row["number"]: row for row in ResultsDB(stores.results_url).trials(name)}
        assert not [n for n, row in rows.items() if row["state"] == "RUNNING"], name
        for trial in trials:
            if trial.state.name == "COMPLETE":
                assert runs[trial.user_attrs["fitgap.mlflow_run_id"]].info.status == "FINISHED", (name, trial.number)
                assert rows[trial.number]["state"] == "COMPLETE", (name, trial.number)
    for file in ("optuna.db", "mlflow.db", "results.db"):
        if (stores.workspace / file).exists():
            with sqlite3.connect(stores.workspace / file) as db:
                assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",), file


def wait_for(condition, timeout=90.0, every=0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {condition}")


def executors_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid), "-f", "fitgap.training.process"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


def running(trials):
    return [t for t in trials if t.state.name == "RUNNING"]


def no_run_left_running(study, name):
    return all(run.info.status != "RUNNING" for run in study.mlflow_runs(name))


def test_killed_executor_fails_its_trial_which_is_retried_with_the_same_params(study):
    launch = study.start(study.spec(spec_text("kill-executor", epochs=1500, trials=2)))
    wait_for(lambda: running(study.trials("kill-executor")) and executors_of(launch.pid))
    time.sleep(1.0)
    victim = running(study.trials("kill-executor"))[0]
    os.kill(executors_of(launch.pid)[0], signal.SIGKILL)
    out, err = launch.communicate(timeout=240)
    assert launch.returncode == 0, err
    trials = study.trials("kill-executor")
    failed = trials[victim.number]
    assert failed.state.name == "FAIL" and failed.user_attrs["fitgap.reason"] == "executor died (exit code -9)"
    retry = next(t for t in trials if t.user_attrs.get("fitgap.retry_of") == victim.number)
    assert retry.params == failed.params and retry.state.name == "COMPLETE"
    assert sum(t.state.name == "COMPLETE" for t in trials) == 2 and len(trials) == 3  # the budget counts it once
    runs = {r.info.run_id: r for r in study.mlflow_runs("kill-executor")}
    assert runs[failed.user_attrs["fitgap.mlflow_run_id"]].info.status == "FAILED"
    assert no_run_left_running(study, "kill-executor")
    assert study.results("kill-executor")[victim.number]["reason"] == "executor died (exit code -9)"


def test_killed_coordinator_resumes_with_nothing_lost(study):
    """Its running trial, written live (every second here), keeps the epochs it had written."""
    spec = study.spec(spec_text("kill-coordinator", epochs=600, trials=3))
    launch = study.start(spec, env=BEAT | {"FITGAP_LIVE_S": "1"})

    def live_rows():
        rows = study.results("kill-coordinator")
        return [n for n, row in rows.items() if row["state"] == "RUNNING"]

    [stranded] = wait_for(lambda: any(t.state.name == "COMPLETE" for t in study.trials("kill-coordinator"))
                          and live_rows(), timeout=120)
    executors = executors_of(launch.pid)
    complete_before = {t.number: t.value for t in study.trials("kill-coordinator") if t.state.name == "COMPLETE"}
    written = ResultsDB(study.stores.results_url).epochs("kill-coordinator", stranded)
    os.kill(launch.pid, signal.SIGKILL)
    launch.wait()
    wait_for(lambda: not any(alive(p) for p in executors), timeout=15)  # no orphan keeps the cores busy
    time.sleep(5)  # past the grace period: the stranded trial's heartbeat is stale
    resumed = fitgap("launch", str(spec), "--workspace", str(study.stores.workspace), "--cpu-slots", "1", env=BEAT)
    assert resumed.returncode == 0, resumed.stderr
    trials = study.trials("kill-coordinator")
    assert trials[stranded].state.name == "FAIL"
    assert any(t.user_attrs.get("fitgap.retry_of") == stranded for t in trials)
    assert sum(t.state.name == "COMPLETE" for t in trials) == 3  # the budget, with the failure counted once
    assert {n: trials[n].value for n in complete_before} == complete_before
    results = study.results("kill-coordinator")
    assert all(results[n]["state"] == "COMPLETE" and results[n]["final_val_accuracy"] is not None
               for n in complete_before)
    assert results[stranded]["state"] == "FAIL" and results[stranded]["reason"] == "coordinator died"
    kept = ResultsDB(study.stores.results_url).epochs("kill-coordinator", stranded)
    assert written and kept[:len(written)] == written  # and those written after the read above
    assert no_run_left_running(study, "kill-coordinator")


@pytest.mark.parametrize("signum, reason, code", [(signal.SIGINT, "interrupted", 130),
                                                   (signal.SIGTERM, "terminated (SIGTERM)", 143)])
def test_ctrl_c_or_sigterm_records_running_trials_as_interrupted_and_exits_128_plus_the_signal(study, signum, reason,
                                                                                                code):
    """Ctrl-C: a terminal signals the whole foreground group; SIGTERM (`timeout`, `docker stop`, systemd): the
    coordinator alone. Either way no trial and no MLflow run (the study's included) stays RUNNING."""
    name = f"signal-{signum}"
    launch = study.start(study.spec(spec_text(name, epochs=3000, trials=3)))
    wait_for(lambda: running(study.trials(name)) and executors_of(launch.pid))
    executors = executors_of(launch.pid)
    time.sleep(1.0)
    if signum == signal.SIGINT:
        os.killpg(launch.pid, signum)
    else:
        launch.send_signal(signum)
    out, err = launch.communicate(timeout=60)
    assert launch.returncode == code, err
    assert f"study {name}:" in out and reason in err and "Traceback" not in err
    trials = study.trials(name)
    # The running trial, and any asked ahead while it trained: running for Optuna, interrupted, never retried.
    assert trials and all(t.state.name == "FAIL" and t.user_attrs["fitgap.reason"] == reason for t in trials)
    assert not any(t.user_attrs.get("fitgap.retry_of") is not None for t in trials)
    assert not any(alive(p) for p in executors)
    assert no_run_left_running(study, name)


def test_fitgap_stop_lets_running_trials_finish(study):
    launch = study.start(study.spec(spec_text("stop-me", epochs=200, trials=100)))
    wait_for(lambda: sum(t.state.name == "COMPLETE" for t in study.trials("stop-me")) >= 1)
    stopped = fitgap("stop", "stop-me", "--workspace", str(study.stores.workspace))
    assert stopped.returncode == 0, stopped.stderr
    out, err = launch.communicate(timeout=60)
    assert launch.returncode == 0, err
    states = [t.state.name for t in study.trials("stop-me")]
    assert 1 <= len(states) < 100 and set(states) == {"COMPLETE"}


def test_a_second_coordinator_on_one_sqlite_workspace_is_refused_at_once(study):
    spec = study.spec(spec_text("busy", epochs=3000, trials=2))
    first = study.start(spec)
    wait_for(lambda: running(study.trials("busy")))
    second = fitgap("launch", str(spec), "--workspace", str(study.stores.workspace))
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=60)
    assert second.returncode == 2
    assert "in use by another fitgap coordinator" in second.stderr and "PostgreSQL" in second.stderr


def test_trial_timeout_and_non_finite_loss_fail_alone_and_the_study_goes_on(study):
    """One launch: the first trial's loss diverges at once, the second trains past its timeout."""
    extra = "trial_timeout: 2\nenqueue:\n  - {learning_rate: 1.0e+6}\n  - {learning_rate: 0.05}\n"
    spec = study.spec(spec_text("faulty", epochs=20000, trials=2).replace("high: 0.3", "high: 2.0e+6") + extra)
    launch = study.start(spec)
    out, err = launch.communicate(timeout=180)
    assert launch.returncode == 0, err
    diverged, slow = study.trials("faulty")
    assert diverged.state.name == "FAIL" and "non-finite loss" in diverged.user_attrs["fitgap.reason"]
    runs = {r.info.run_id: r for r in study.mlflow_runs("faulty")}
    assert runs[diverged.user_attrs["fitgap.mlflow_run_id"]].info.status == "FAILED"
    assert slow.state.name == "FAIL" and slow.user_attrs["fitgap.reason"] == "trial timeout (2 s) exceeded"


def test_median_pruner_prunes_at_report_epochs_and_keeps_the_full_curve(study):
    extra = ("pruner: {type: median, n_startup_trials: 1, report_every: 3}\n"
             "enqueue:\n  - {learning_rate: 0.3}\n  - {learning_rate: 0.0001}\n")
    spec = study.spec(spec_text("pruned", epochs=12, trials=2).replace("low: 0.01", "low: 0.0001") + extra)
    launch = study.start(spec)
    out, err = launch.communicate(timeout=120)
    assert launch.returncode == 0, err
    good, bad = study.trials("pruned")
    assert good.state.name == "COMPLETE" and sorted(good.intermediate_values) == [3, 6, 9]  # reports: 3, not 12
    assert bad.state.name == "PRUNED"
    pruned_at = int(bad.user_attrs["fitgap.reason"].removeprefix("pruned at epoch "))
    assert pruned_at in (2, 5, 8)
    assert len(ResultsDB(study.stores.results_url).epochs("pruned", bad.number)) == pruned_at + 1
    assert no_run_left_running(study, "pruned")
    runs = {r.info.run_id: r for r in study.mlflow_runs("pruned")}
    assert runs[bad.user_attrs["fitgap.mlflow_run_id"]].info.status == "KILLED"


def test_fake_gpus_pin_each_executor_and_its_trials(study):
    spec = study.spec(spec_text("pinned", epochs=2, trials=4))
    env = {"FITGAP_FAKE_GPUS": "0,1", "FITGAP_FAKE_GPU_MEMORY_MB": "16000"}
    launch = study.start(spec, "--gpus", "all", "--slots-per-gpu", "2", "--cpu-slots", "0", env=env)
    out, err = launch.communicate(timeout=240)
    assert launch.returncode == 0, err
    rows = study.results("pinned").values()
    assert len(rows) == 4
    planned = {0: "gpu:0", 1: "gpu:0", 2: "gpu:1", 3: "gpu:1"}
    assert all(row["device"] == planned[row["slot"]] for row in rows)  # as the executor itself saw its device
    runs = study.mlflow_runs("pinned")
    assert all(r.data.tags["fitgap.device"] == planned[int(r.data.tags["fitgap.slot"])] for r in runs
               if "fitgap.slot" in r.data.tags and r.data.tags.get("fitgap.role") != "study")


def test_executors_are_recycled_after_their_share_of_trials(study):
    launch = study.start(study.spec(spec_text("recycled", epochs=2, trials=2)), "--max-trials-per-executor", "1")
    executors: set[int] = set()
    while launch.poll() is None:  # each executor lives at least its TensorFlow import (seconds)
        executors.update(executors_of(launch.pid))
        time.sleep(0.05)
    assert launch.returncode == 0, launch.stderr.read()
    assert [t.state.name for t in study.trials("recycled")] == ["COMPLETE"] * 2
    assert len(executors) >= 2  # a fresh process for every trial


def test_delete_removes_the_study_everywhere_and_frees_its_name(study):
    spec = study.spec(spec_text("doomed", epochs=2, trials=1))
    assert fitgap("launch", str(spec), "--workspace", str(study.stores.workspace)).returncode == 0
    deleted = fitgap("delete", "doomed", "--yes", "--workspace", str(study.stores.workspace))
    assert deleted.returncode == 0, deleted.stderr
    assert study.trials("doomed") == [] and study.results("doomed") == {}
    client = MlflowClient(tracking_uri=study.stores.tracking_uri)
    assert client.get_experiment_by_name("doomed") is None
    again = fitgap("create", str(spec), "--workspace", str(study.stores.workspace))  # the name is free in all three
    assert again.returncode == 0, again.stderr
    assert study.trials("doomed") == [] and client.get_experiment_by_name("doomed").lifecycle_stage == "active"


def test_a_killed_tracking_process_stops_the_launch_in_one_line_and_a_relaunch_loses_nothing(study):
    spec = study.spec(spec_text("kill-tracking", epochs=300, trials=3))
    launch = study.start(spec)
    wait_for(lambda: any(t.state.name == "COMPLETE" for t in study.trials("kill-tracking")), timeout=120)
    writer = subprocess.run(["pgrep", "-P", str(launch.pid), "-f", "fitgap.tracking.writer"], capture_output=True,
                            text=True).stdout.split()
    os.kill(int(writer[0]), signal.SIGKILL)
    _, err = launch.communicate(timeout=120)
    assert launch.returncode == 1, err
    assert err.strip().splitlines()[-1].startswith("fitgap: error: the tracking process exited (code -9)"), err
    assert "Traceback" not in err
    again = fitgap("launch", str(spec), "--workspace", str(study.stores.workspace), "--cpu-slots", "1")
    assert again.returncode == 0, again.stderr
    assert sum(t.state.name == "COMPLETE" for t in study.trials("kill-tracking")) == 3


@pytest.fixture
def small_disk(tmp_path):
    """A workspace on a 3 MB filesystem (a tmpfs, where the tests may mount one), else every file capped at 3 MB
    (RLIMIT_FSIZE, with SIGXFSZ ignored: writes past it fail as on a full disk). Yields (folder, preexec, grow)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(folder)],
                                                   capture_output=True).returncode == 0
    limit = {"on": not mounted}

    def preexec():
        if limit["on"]:
            import resource

            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (3 << 20, 3 << 20))

    def grow():
        if mounted:
            subprocess.run(["mount", "-o", "remount,size=256m", str(folder)], check=True)
        limit["on"] = False

    yield folder, preexec, grow
    if mounted:
        subprocess.run(["umount", "-l", str(folder)])


def test_a_full_disk_stops_the_launch_in_one_line_and_a_relaunch_fails_what_it_left_running_and_finishes(study,
                                                                                                         small_disk):
    folder, preexec, grow = small_disk
    spec = study.spec(spec_text("full", epochs=100, trials=30).replace("executor: keras\n", "executor: fused\n"))
    command = [sys.executable, "-m", "fitgap.studies.cli", "launch", str(spec), "--workspace", str(folder / "ws"),
               "--cpu-slots", "1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FITGAP_", "MLFLOW_"))}
    full = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=preexec)
    assert full.returncode == 1, full.stderr
    lines = full.stderr.strip().splitlines()
    assert "Traceback" not in full.stderr and len(lines) <= 32, full.stderr[-3000:]  # start, a line per trial
    # Whichever store refuses first: the tracking process's (its log says more) or the coordinator's own write
    # (Optuna's journal: a tmpfs says ENOSPC, the size cap EFBIG)
    assert lines[-1].startswith("fitgap: error: ") and any(
        cause in lines[-1] for cause in ("logs/tracking.log", "database or disk is full", "No space left on device",
                                         "File too large")), lines[-1]
    stores = Stores.resolve(workspace=folder / "ws")
    trials = optuna.load_study(study_name="full", storage=open_storage(stores.storage)).get_trials()
    left = [t.number for t in running(trials)]  # what the full disk refused to close (under WAL, Optuna's writes too)
    assert left or any(t.state.name == "FAIL" for t in trials)
    grow()
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    trials = optuna.load_study(study_name="full", storage=open_storage(stores.storage)).get_trials()
    assert [trials[n].state.name for n in left] == ["FAIL"] * len(left)  # failed at once, and retried
    assert sum(t.state.name == "COMPLETE" for t in trials) == 30
    assert_sound(stores)


def test_simultaneous_launches_on_a_fresh_workspace_leave_one_coordinator_and_sound_stores(study, tmp_path):
    """Four launches of one spec at the same moment on an empty folder: one runs, the others are refused in one line
    before they write anything (stores are created only under the workspace's lock), and the stores stay sound."""
    import sqlite3

    fresh = tmp_path / "fresh"
    spec = study.spec(spec_text("race", epochs=30, trials=1))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FITGAP_", "MLFLOW_"))}
    launches = [subprocess.Popen([sys.executable, "-m", "fitgap.studies.cli", "launch", str(spec), "--workspace",
                                  str(fresh), "--cpu-slots", "1"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in launches]
    assert sorted(code for code, _ in results) == [0, 2, 2, 2], results
    for code, err in results:
        if code == 2:
            assert len(err.strip().splitlines()) == 1 and "in use by another fitgap coordinator" in err, err
    for name in ("mlflow.db", "results.db"):
        with sqlite3.connect(fresh / name) as db:
            assert not db.execute("SELECT name FROM sqlite_master WHERE name LIKE '_alembic_tmp%'").fetchall()
    assert_sound(Stores.resolve(workspace=fresh))
    again = fitgap("launch", str(spec), "--workspace", str(fresh), "--trials", "2")
    assert again.returncode == 0, again.stderr
    assert [t.state.name for t in optuna.load_study(study_name="race", storage=journal_storage(fresh))
            .get_trials()] == ["COMPLETE", "COMPLETE"]

"""The coordinator on fake executors (`fakes.py`): budget, faults, retries, batching, pruning, timeouts, recycling and
live curves, with the real stores (Optuna, MLflow and the results database on SQLite, the real tracking process), no
TensorFlow."""

from __future__ import annotations

import json
import statistics
import threading
import time

import optuna
import pytest
from mlflow import MlflowClient

from click.testing import CliRunner

from fitgap.data.datasets import load_dataset
from fitgap.errors import RunError
from fitgap.studies import coordinator
from fitgap.studies.api import rerun, status
from fitgap.studies.batching import in_flight_limit
from fitgap.studies.choice import fuse_group_key
from fitgap.studies.cli import main
from fitgap.studies.coordinator import Coordinator
from fitgap.studies.options import RunOptions
from fitgap.studies.slots import plan_slots
from fitgap.studies.stores import Stores
from fitgap.studies.study import StudyHandle, open_storage
from fitgap.studies.trials import trial_of, trial_seed, trial_task
from fitgap.sweeps.space import derive_seed, make_sampler, suggest, trial_params
from fitgap.sweeps.spec import SpecError, parse_spec
from fitgap.tracking.mlflow_sink import MlflowSink
from fitgap.tracking.records import EpochRecord, LiveRecord, TrialRecord
from fitgap.tracking.results import ResultsDB
from fitgap.tracking.writer import TrackingWriter

from fakes import Script, level, metrics_at

State = optuna.trial.TrialState


def spec_of(**changes):
    return parse_spec({"name": "fake", "dataset": {"name": "dot"}, "model": {"hidden": [4]}, "epochs": 6,
                       "trials": 5, "executor": "keras", "objective": [{"metric": "val_accuracy"}],
                       "sampler": "random", "seed": 1,
                       "search": {"learning_rate": {"type": "float", "low": 0.01, "high": 0.4, "log": True}},
                       **changes})


class Run:
    """One launch of `spec` on fake executors, and what it left in the three stores."""

    def __init__(self, workspace, spec, script: Script, options=RunOptions(), fuse: int = 1, slots: int = 1,
                 on_trial=None, on_epoch=None):
        self.spec, self.script = spec, script
        self.stores = Stores.resolve(workspace=workspace)
        data = load_dataset(spec.dataset.model_dump(), spec.base_dir)
        StudyHandle.check(spec, self.stores, data.content_hash)
        self.handle = StudyHandle.open(spec, self.stores, data.content_hash, save_models="none", plots="none")
        self.coordinator = Coordinator(self.handle, plan_slots("none", cpu_slots=slots), options, fuse,
                                       on_trial and (lambda *args: on_trial(self, *args)), start_executor=script,
                                       on_epoch=on_epoch)

    def __call__(self) -> "Run":
        try:
            self.coordinator.run()
        finally:
            self.handle.close()
        return self

    @property
    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return self.handle.study.get_trials()

    def rows(self) -> dict[int, dict]:
        with ResultsDB(self.stores.results_url) as results:
            return {row["number"]: row for row in results.trials(self.spec.name)}

    def epochs(self, number: int) -> list[dict]:
        with ResultsDB(self.stores.results_url) as results:
            return results.epochs(self.spec.name, number)

    def runs(self) -> dict[str, object]:
        client = MlflowClient(tracking_uri=self.stores.tracking_uri)
        experiment = client.get_experiment_by_name(self.spec.name)
        return {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}

    def history(self, number: int, metric: str = "val_accuracy") -> list:
        """Trial `number`'s MLflow points of `metric`, by step."""
        # any thread may ask
        study = optuna.load_study(study_name=self.spec.name, storage=open_storage(self.stores.storage))
        run_id = study.get_trials(deepcopy=False)[number].user_attrs["fitgap.mlflow_run_id"]
        points = MlflowClient(tracking_uri=self.stores.tracking_uri).get_metric_history(run_id, metric)
        return sorted(points, key=lambda p: (p.step, p.timestamp))

    def check_consistent(self) -> None:
        """Nothing RUNNING; every finished trial has its MLflow run (in the matching status) and its results row."""
        status = {"COMPLETE": "FINISHED", "FAIL": "FAILED", "PRUNED": "KILLED"}
        runs, rows = self.runs(), self.rows()
        assert not [t.number for t in self.trials if t.state == State.RUNNING]
        assert not [r for r in runs.values() if r.info.status == "RUNNING"]
        for trial in self.trials:
            run = runs[trial.user_attrs["fitgap.mlflow_run_id"]]
            assert run.info.status == status[trial.state.name], trial.number
            assert rows[trial.number]["state"] == trial.state.name
            if trial.state == State.COMPLETE:
                assert rows[trial.number]["value"] == pytest.approx(trial.value)


def wait_for(condition, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {condition}")


def live_writes(monkeypatch) -> list[tuple[float, LiveRecord]]:
    """What the coordinator hands the tracking process as live writes, with when."""
    sent = []
    original = TrackingWriter.write_live

    def write_live(writer, live):
        sent.append((time.time(), live))
        original(writer, live)

    monkeypatch.setattr(TrackingWriter, "write_live", write_live)
    return sent


def by_state(trials) -> dict[str, int]:
    return {state: sum(t.state.name == state for t in trials) for state in ("COMPLETE", "PRUNED", "FAIL")}


def test_a_study_runs_to_its_budget_and_each_trial_lands_in_all_three_stores(workspace):
    run = Run(workspace, spec_of(trials=5), Script(), slots=2)()
    assert by_state(run.trials) == {"COMPLETE": 5, "PRUNED": 0, "FAIL": 0}
    run.check_consistent()
    tasks = {task.number: task for batch in run.script.batches for task in batch}
    assert {len(batch) for batch in run.script.batches} == {1} and len(tasks) == 5  # keras trials: one per batch
    for trial in run.trials:  # the value is the objective at the best epoch of the curve the executor sent
        assert tasks[trial.number].params["learning_rate"] == trial.params["learning_rate"]
        assert trial.value == pytest.approx(metrics_at(tasks[trial.number], 5)["val_accuracy"])
        assert len(run.epochs(trial.number)) == 6
    assert len({task.seed for task in tasks.values()}) == 5


def test_an_open_study_commits_to_optuna_and_mlflow_in_wal_mode_without_a_sync_per_commit(workspace):
    """The engines opened before the switch to WAL (`sqlite.use_wal`) reconnect with synchronous=NORMAL; the
    results database keeps the rollback journal and SQLite's default FULL. Optuna on SQLite: a workspace made
    before the journal."""
    open_storage(f"sqlite:///{workspace / 'optuna.db'}")
    run = Run(workspace, spec_of(trials=1), Script())
    engines = {"optuna": run.handle.storage.engine, "mlflow": run.handle.sink.client._tracking_client.store.engine,
               "results": run.handle.results._engine}
    settings = {}
    for name, engine in engines.items():
        with engine.connect() as connection:
            settings[name] = (connection.exec_driver_sql("PRAGMA journal_mode").scalar(),
                              connection.exec_driver_sql("PRAGMA synchronous").scalar())
    assert settings == {"optuna": ("wal", 1), "mlflow": ("wal", 1), "results": ("delete", 2)}
    run()
    assert by_state(run.trials) == {"COMPLETE": 1, "PRUNED": 0, "FAIL": 0}


def test_a_failed_trial_is_recorded_with_its_reason_and_the_study_goes_on(workspace):
    plan = {1: "fail", 2: "nan"}
    run = Run(workspace, spec_of(trials=5), Script(lambda task: plan.get(task.number, "complete")))()
    states = {t.number: t.state.name for t in run.trials}
    assert states == {0: "COMPLETE", 1: "FAIL", 2: "FAIL", 3: "COMPLETE", 4: "COMPLETE"}  # failures are not retried
    reasons = {n: row["reason"] for n, row in run.rows().items()}
    assert reasons[1] == "ValueError: bad trial" and reasons[2] == "non-finite loss (nan) at epoch 2"
    assert run.trials[1].user_attrs["fitgap.reason"] == "ValueError: bad trial"
    run.check_consistent()


def test_a_killed_executor_fails_its_trial_which_is_retried_once_with_the_same_params_on_a_new_executor(workspace):
    script = Script(lambda task: "die" if task.number == 1 else "complete")  # its retry has another number
    run = Run(workspace, spec_of(trials=4), script)()
    trials = {t.number: t for t in run.trials}
    assert trials[1].state == State.FAIL and run.rows()[1]["reason"] == "executor died (exit code -9)"
    retry = [t for t in run.trials if t.user_attrs.get("fitgap.retry_of") == 1]
    assert len(retry) == 1 and retry[0].state == State.COMPLETE and retry[0].params == trials[1].params
    assert by_state(run.trials) == {"COMPLETE": 4, "PRUNED": 0, "FAIL": 1}  # the retried failure counts once
    assert len(script.started) == 2  # the slot got a new executor
    run.check_consistent()


def test_with_no_retries_a_killed_executors_trial_stays_failed(workspace):
    script = Script(lambda task: "die" if task.number == 0 else "complete")
    run = Run(workspace, spec_of(trials=3), script, RunOptions(retries=0))()
    assert by_state(run.trials) == {"COMPLETE": 2, "PRUNED": 0, "FAIL": 1}
    assert not [t for t in run.trials if "fitgap.retry_of" in t.user_attrs]


def test_an_executor_that_dies_starting_up_is_replaced_and_the_study_goes_on(workspace):
    script = Script(die_starting=2)  # killed while importing TensorFlow (an OOM kill at start, say), twice
    run = Run(workspace, spec_of(trials=3), script)()
    assert len(script.started) == 3 and by_state(run.trials)["COMPLETE"] == 3
    run.check_consistent()


def test_a_slot_whose_executors_never_get_ready_stops_the_launch_with_a_run_error_before_any_trial(workspace):
    script = Script(die_starting=10**6)
    run = Run(workspace, spec_of(), script)
    with pytest.raises(RunError, match="exited .* before it was ready, 3 times") as error:
        run()
    assert error.value.exit_code == 1 and run.trials == [] and len(script.started) == 3


def test_a_relaunch_on_sqlite_fails_and_retries_the_trials_a_killed_coordinator_left_running(workspace):
    """The workspace's lock proves that no other coordinator is alive: no waiting for the heartbeat's grace."""
    first = Run(workspace, spec_of(trials=2), Script())
    orphan = first.handle.study.ask()  # as a coordinator killed mid-trial leaves it: RUNNING, with its MLflow run
    first.handle.start_trial_run(orphan, 0, 1)
    first.handle.close("KILLED")
    run = Run(workspace, spec_of(trials=2), Script())()
    trials = {t.number: t for t in run.trials}
    assert trials[0].state == State.FAIL and run.rows()[0]["reason"] == "coordinator died"
    assert [t.user_attrs.get("fitgap.retry_of") for t in run.trials[1:]] == [0, None]
    assert by_state(run.trials) == {"COMPLETE": 2, "PRUNED": 0, "FAIL": 1}
    run.check_consistent()


def test_fused_batches_hold_one_group_each_training_under_its_own_number_and_stay_within_the_budget(workspace):
    spec = spec_of(trials=10, executor="fused", search={
        "learning_rate": {"type": "float", "low": 0.01, "high": 0.4, "log": True},
        "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]}})
    run = Run(workspace, spec, Script(), fuse=4)()
    batches = run.script.batches
    assert all(1 <= len(batch) <= 4 for batch in batches) and max(map(len, batches)) > 1
    for batch in batches:
        assert len({fuse_group_key(task.params) for task in batch}) == 1
        assert len({task.number for task in batch}) == len(batch)
    assert sorted(task.number for batch in batches for task in batch) == list(range(10))
    assert by_state(run.trials) == {"COMPLETE": 10, "PRUNED": 0, "FAIL": 0}
    run.check_consistent()


def told_before(trials) -> list[int]:
    """For each trial, how many trials had been told to Optuna when it was asked (Optuna's own timestamps)."""
    return [sum(t.datetime_complete is not None and t.datetime_complete < trial.datetime_start for t in trials)
            for trial in trials]


def test_fused_tpe_asks_its_start_up_trials_alone_and_later_rounds_within_the_bound(workspace):
    """Without the bound, fuse 16 and asking ahead would ask 32 trials before TPE saw its first result."""
    spec = spec_of(trials=40, executor="fused", sampler="tpe")
    run = Run(workspace, spec, Script(epoch_s=0.01), fuse=16)()  # a batch trains long enough to ask ahead
    trials, told = run.trials, told_before(run.trials)
    assert by_state(trials) == {"COMPLETE": 40, "PRUNED": 0, "FAIL": 0}
    assert told[:10] == [0] * 10 and told[10] == 10  # the start-up round, then nothing until all ten are told
    sampler = run.handle.study.sampler
    for number, seen in enumerate(told):  # the trials asked and not told when it was asked: within the bound
        assert number - seen < in_flight_limit(sampler, seen, spec), (number, seen)
    assert len(run.script.batches[0]) == 10 and max(map(len, run.script.batches)) == 16
    run.check_consistent()


def test_fused_random_sampling_batches_and_asks_ahead_freely(workspace):
    stores = Stores.resolve(workspace=workspace)

    def hold_the_first_batch(task):  # until asking ahead has asked the next batch too
        if task.number < 16:
            wait_for(lambda: len(optuna.load_study(study_name="fake", storage=open_storage(stores.storage)).trials) >= 32)

    run = Run(workspace, spec_of(trials=40, executor="fused"), Script(before=hold_the_first_batch), fuse=16)()
    assert told_before(run.trials)[:32] == [0] * 32 and len(run.script.batches[0]) == 16
    assert by_state(run.trials) == {"COMPLETE": 40, "PRUNED": 0, "FAIL": 0}


def test_a_fused_qmc_batch_is_drawn_by_qmc_from_its_second_trial_not_at_random(workspace):
    """Optuna's QMC sampler draws the first trial with its independent (random) sampler and infers its search space
    from it; a batch asked before any of its params were suggested was drawn at random whole."""
    spec = spec_of(trials=8, executor="fused", sampler="qmc")
    run = Run(workspace, spec, Script(), fuse=8)()
    assert len(run.script.batches[0]) == 8
    random_spec = spec_of(trials=8, sampler="random")
    study = optuna.create_study(sampler=make_sampler(random_spec, derive_seed(spec.seed, "sampler")))
    drawn_at_random = [suggest(study.ask(), random_spec) for _ in range(8)]
    qmc = [trial.params for trial in run.trials]
    assert qmc[0] == drawn_at_random[0] and all(q != r for q, r in zip(qmc[1:], drawn_at_random[1:]))


def test_the_median_pruner_prunes_at_its_report_epochs_and_the_curve_ends_there(workspace):
    enqueue = [{"learning_rate": lr} for lr in (0.3, 0.4, 0.01, 0.39)]
    spec = spec_of(trials=4, epochs=10, enqueue=enqueue,
                   pruner={"type": "median", "n_startup_trials": 2, "report_every": 2})
    stores = Stores.resolve(workspace=workspace)

    def told_first_two(task):  # the pruner judges by told trials: make its start-up deterministic
        while task.number >= 2 and sum(t.state == State.COMPLETE for t in optuna.load_study(
                study_name="fake", storage=open_storage(stores.storage)).get_trials(deepcopy=False)) < 2:
            time.sleep(0.05)

    run = Run(workspace, spec, Script(before=told_first_two))()
    states = {t.number: t.state.name for t in run.trials}
    assert states == {0: "COMPLETE", 1: "COMPLETE", 2: "PRUNED", 3: "COMPLETE"}
    assert run.rows()[2]["reason"] == "pruned at epoch 1"
    assert [e["epoch"] for e in run.epochs(2)] == [0, 1] and len(run.epochs(3)) == 10
    run.check_consistent()


@pytest.mark.parametrize("executor, fuse", [("keras", 1), ("fused", 8)])
def test_repeats_train_with_their_own_seeds_and_the_trial_records_their_mean(workspace, executor, fuse):
    run = Run(workspace, spec_of(trials=2, repeats=3, executor=executor), Script(), fuse=fuse, slots=2)()
    tasks = [task for batch in run.script.batches for task in batch]
    if fuse > 1:  # a trial's repeats share a fused batch, each under its own number
        assert max(map(len, run.script.batches)) == 6 and len({t.number for t in tasks}) == 6
    for number in (0, 1):
        mine = sorted((t for t in tasks if trial_of(t.number) == number), key=lambda t: t.repeat)
        assert [t.repeat for t in mine] == [0, 1, 2] and len({t.seed for t in mine}) == 3
        values = [metrics_at(t, 5)["val_accuracy"] for t in mine]
        row = run.rows()[number]
        assert row["value"] == pytest.approx(statistics.fmean(values))
        assert row["value_std"] == pytest.approx(statistics.pstdev(values))
        assert row["repeats"] == 3 and row["seed"] == mine[0].seed
        assert [r["value"] for r in json.loads(row["repeats_json"])] == pytest.approx(values)
        assert all(e["val_accuracy"] is not None for e in run.epochs(number))  # the mean of all three, epoch by epoch
    run.check_consistent()


def test_a_trial_over_its_timeout_is_stopped_after_its_epoch_and_fails_with_that_reason(workspace):
    script = Script(epoch_s=0.1)
    run = Run(workspace, spec_of(trials=1, epochs=50, trial_timeout=0.5), script)()
    assert run.trials[0].state == State.FAIL
    assert run.rows()[0]["reason"] == "trial timeout (0.5 s) exceeded" == script.stops[0][1]
    assert 2 <= len(run.epochs(0)) < 50
    run.check_consistent()


def test_executors_are_replaced_after_their_share_of_trainings(workspace):
    script = Script()
    run = Run(workspace, spec_of(trials=5), script, RunOptions(max_trials_per_executor=2))()
    assert len(script.started) == 3 and by_state(run.trials)["COMPLETE"] == 5


def test_a_stop_request_lets_the_trials_asked_finish_and_asks_for_no_more(workspace):
    stopped = threading.Event()

    def stop_after_the_first(run, record, used, budget):
        run.handle.study.set_user_attr("fitgap.stop", True)  # what `fitgap stop` does
        stopped.set()

    script = Script(before=lambda task: task.number == 0 or stopped.wait(60))
    run = Run(workspace, spec_of(trials=6), script, on_trial=stop_after_the_first)()
    # Trial 0 told; trial 1 training and trial 2 asked ahead when the stop came: they finish, nothing more is asked
    assert [t.number for t in run.trials] == [0, 1, 2] and by_state(run.trials)["COMPLETE"] == 3
    run.check_consistent()


def test_the_fake_curves_follow_the_learning_rate():
    """The fake's own rule, which the pruning test leans on: a higher learning rate reaches a higher accuracy."""
    spec = spec_of()
    low, high = (trial_task(spec, 0, {"learning_rate": lr, "epochs": 6}, 0, "keras") for lr in (0.01, 0.4))
    assert level(low) < level(high) and metrics_at(low, 5)["val_accuracy"] < metrics_at(high, 5)["val_accuracy"]


# ---- live curves, a trial's own time ---------------------------------------------------------------------------


def test_a_slow_trial_reaches_mlflow_and_the_results_database_while_it_trains_and_each_epoch_lands_once(workspace,
                                                                                                       monkeypatch):
    """The trial pauses at epochs 20 and 40; meanwhile both stores, `fitgap status` and `rerun` are read."""
    monkeypatch.setattr(coordinator, "LIVE_EVERY_S", 0.0)  # at every bunch: each pause sees every epoch sent
    pauses = {20: (threading.Event(), threading.Event()), 40: (threading.Event(), threading.Event())}

    def during(task, epoch):
        if epoch in pauses:
            reached, go = pauses[epoch]
            reached.set()
            go.wait(120)

    script = Script(epoch_s=0.02, during=during)
    run = Run(workspace, spec_of(trials=1, epochs=60), script)
    thread = threading.Thread(target=run)
    thread.start()
    try:
        for epoch, (reached, go) in pauses.items():
            assert reached.wait(60)
            history = wait_for(lambda: len(points := run.history(0)) == epoch and points)
            assert [p.step for p in history] == list(range(epoch))
            stamps = [p.timestamp for p in history]
            assert stamps == sorted(set(stamps))  # increasing and distinct: each point when its epoch ended
            stored = run.epochs(0)
            assert stamps == [int(e["ended_at"] * 1000) for e in stored] and len(stored) == epoch
            row = run.rows()[0]
            task = script.batches[0][0]
            assert row["state"] == "RUNNING" and row["value"] is None
            assert row["final_val_accuracy"] == pytest.approx(metrics_at(task, epoch - 1)["val_accuracy"])
            [running] = status("fake", workspace=workspace).running
            assert (running.number, running.epoch, running.epochs) == (0, epoch, 60)
            assert running.gap == pytest.approx(row["final_fit_gap"]) and running.running_s > 0
            shown = CliRunner().invoke(main, ["status", "fake", "--workspace", str(workspace)])
            assert shown.exit_code == 0 and "1 RUNNING" in shown.output, shown.output
            assert f"trial 0  epoch {epoch}/60  val_accuracy={row['final_val_accuracy']:.4g}  gap=" in shown.output
            with pytest.raises(SpecError, match="still running"):
                rerun("fake", 0, workspace=workspace)
            go.set()
    finally:
        for _, go in pauses.values():
            go.set()
        thread.join(120)
    history = run.history(0)
    assert [p.step for p in history] == list(range(60))  # each epoch once: the end logs what live writes did not
    assert [p.timestamp for p in history] == [int(e["ended_at"] * 1000) for e in run.epochs(0)]
    assert run.rows()[0]["state"] == "COMPLETE" and [e["epoch"] for e in run.epochs(0)] == list(range(60))
    run.check_consistent()


def test_a_running_trial_is_written_live_at_most_every_interval_and_each_epoch_once(workspace, monkeypatch):
    monkeypatch.setattr(coordinator, "LIVE_EVERY_S", 0.25)
    sent = live_writes(monkeypatch)
    shown = []
    run = Run(workspace, spec_of(trials=1, epochs=60), Script(epoch_s=0.02),
              on_epoch=lambda *args: shown.append(args))()
    assert len(sent) >= 2  # 60 epochs of 0.02 s at least
    times = [at for at, _ in sent]
    assert all(later - earlier >= 0.25 for earlier, later in zip(times, times[1:]))
    epochs = [e.epoch for _, live in sent for e in live.epochs]
    assert epochs == list(range(len(epochs))) and len(epochs) < 60  # the last ones come with the record
    assert [p.step for p in run.history(0)] == list(range(60))
    assert shown == [(0, e, 60) for e in range(60)]  # the display's hook: every epoch record received
    run.check_consistent()


def test_the_end_of_a_trial_logs_to_mlflow_only_the_points_its_live_writes_did_not(workspace):
    """MLflow's SQL store would swallow an identical point logged twice: count what the sink sends instead."""
    stores = Stores.resolve(workspace=workspace)
    sink = MlflowSink(stores.tracking_uri, stores.artifact_root)
    run_id = sink.start_trial(sink.study_run("sink", {}, "name: sink\n"), 0, {}, {}).run_id
    epochs = tuple(EpochRecord(0, e, {"loss": 1 / (e + 1)}, ended_at=1_700_000_000.0 + e) for e in range(5))
    tables = sink._open_tables()  # every point goes through its `finish`, live or at the end
    sent, finish = [], tables.finish
    tables.finish = lambda run, points, *rest: (sent.extend(points), finish(run, points, *rest))[1]
    sink.log_live(LiveRecord("sink", 0, run_id, {}, epochs[:3], 1, "cpu", 0, 1_700_000_000.0, 0.5, "keras"))
    sink.finish_trial(TrialRecord("sink", 0, "COMPLETE", {}, (0.2,), 4, epochs, {}, 1, "cpu", 0, 1_700_000_000.0,
                                  1_700_000_005.0, mlflow_run_id=run_id, wait_s=0.5), plot=False)
    assert [(m.step, m.timestamp) for m in sent if m.key == "loss"] == [(e, 1_700_000_000_000 + 1000 * e)
                                                                         for e in range(5)]
    assert {m.key: m.value for m in sent if m.key in ("duration_s", "wait_s")} == {"duration_s": 5.0, "wait_s": 0.5}
    assert [m.step for m in sink.client.get_metric_history(run_id, "loss")] == list(range(5))


def test_trials_shorter_than_the_live_interval_are_written_once_at_their_end(workspace, monkeypatch):
    monkeypatch.setattr(coordinator, "LIVE_EVERY_S", 10.0)  # as shipped
    sent = live_writes(monkeypatch)
    run = Run(workspace, spec_of(trials=3), Script(epoch_s=0.01))()
    assert sent == []
    assert all([p.step for p in run.history(n)] == list(range(6)) for n in range(3))
    run.check_consistent()


def test_with_repeats_the_live_curve_is_the_mean_over_the_epochs_every_repeat_has_reached(workspace, monkeypatch):
    monkeypatch.setattr(coordinator, "LIVE_EVERY_S", 0.0)
    sent = live_writes(monkeypatch)
    run = Run(workspace, spec_of(trials=1, epochs=20, repeats=2), Script(epoch_s=0.01), slots=2)()
    tasks = sorted((t for batch in run.script.batches for t in batch), key=lambda t: t.repeat)
    epochs = [e for _, live in sent for e in live.epochs]
    assert epochs and [e.epoch for e in epochs] == list(range(len(epochs)))
    for e in epochs:
        mean = statistics.fmean(metrics_at(t, e.epoch)["val_accuracy"] for t in tasks)
        assert e.metrics["val_accuracy"] == pytest.approx(mean)
    assert [p.step for p in run.history(0)] == list(range(20))
    run.check_consistent()


def test_a_killed_executors_trial_keeps_the_epochs_it_sent_in_both_stores(workspace, monkeypatch):
    monkeypatch.setattr(coordinator, "LIVE_EVERY_S", 0.0)
    run = Run(workspace, spec_of(trials=2), Script(lambda task: "die" if task.number == 0 else "complete",
                                                   epoch_s=0.01))()
    row = run.rows()[0]
    assert row["state"] == "FAIL" and row["reason"] == "executor died (exit code -9)"
    assert [e["epoch"] for e in run.epochs(0)] == [0] and [p.step for p in run.history(0)] == [0]
    assert row["final_val_accuracy"] is not None and row["executor"] == "keras"
    run.check_consistent()


def test_a_relaunch_fails_a_killed_coordinators_running_trials_keeping_the_epochs_they_wrote_live(workspace):
    spec = spec_of(trials=2)
    first = Run(workspace, spec, Script())
    handle = first.handle
    written, unwritten = handle.study.ask(), handle.study.ask()  # as a SIGKILLed coordinator leaves them: RUNNING
    params = trial_params(spec, suggest(written, spec))
    run_id = handle.start_trial_run(written, trial_seed(spec, 0), 1, params).run_id
    handle.start_trial_run(unwritten, trial_seed(spec, 1), 1, trial_params(spec, suggest(unwritten, spec)))
    task = trial_task(spec, 0, params, 0, "keras")
    epochs = tuple(EpochRecord(0, e, metrics_at(task, e), ended_at=1_700_000_000.0 + e) for e in range(3))
    live = LiveRecord("fake", 0, run_id, params, epochs, trial_seed(spec, 0), "cpu", 0, time.time() - 5, 0.25, "keras")
    handle.sink.log_live(live)  # what its tracking process had written
    handle.results.write_running(live)
    running = status("fake", workspace=workspace).running
    assert [(r.number, r.epoch, r.epochs) for r in running] == [(0, 3, 6), (1, None, 6)]  # 1: what Optuna knows
    assert running[0].value == pytest.approx(metrics_at(task, 2)["val_accuracy"]) and running[0].running_s >= 5
    shown = CliRunner().invoke(main, ["status", "fake", "--workspace", str(workspace)]).output
    assert "trial 0  epoch 3/6  val_accuracy=" in shown and "trial 1  epoch -/6  no epoch written yet" in shown
    handle.close("KILLED")

    run = Run(workspace, spec, Script())()
    rows = run.rows()
    assert rows[0]["state"] == "FAIL" and rows[0]["reason"] == "coordinator died"
    assert [(e["epoch"], e["ended_at"]) for e in run.epochs(0)] == [(e, 1_700_000_000.0 + e) for e in range(3)]
    assert rows[0]["final_val_accuracy"] == pytest.approx(metrics_at(task, 2)["val_accuracy"])
    assert rows[0]["wait_s"] == 0.25 and rows[0]["device"] == "cpu"
    assert [p.step for p in run.history(0)] == [0, 1, 2] and run.runs()[run_id].info.status == "FAILED"
    assert rows[1]["state"] == "FAIL" and run.epochs(1) == []
    assert by_state(run.trials) == {"COMPLETE": 2, "PRUNED": 0, "FAIL": 2}  # both retried
    run.check_consistent()


def test_duration_is_the_trials_own_training_time_and_its_wait_for_a_slot_is_stored_apart(workspace):
    stores = Stores.resolve(workspace=workspace)

    def hold_the_slot(task):  # trial 0 trains on while trial 1, asked ahead, waits for the slot
        if task.number == 0:
            wait_for(lambda: [t.number for t in optuna.load_study(study_name="fake", storage=open_storage(stores.storage)).trials
                              if "fitgap.mlflow_run_id" in t.user_attrs] == [0, 1])  # trial 1 asked, its run started
            time.sleep(0.3)

    run = Run(workspace, spec_of(trials=2), Script(before=hold_the_slot))()
    rows, runs = run.rows(), run.runs()
    assert rows[1]["wait_s"] >= 0.3 and rows[1]["started_at"] >= rows[0]["started_at"] + 0.3
    assert rows[0]["duration_s"] >= 0.3
    for trial in run.trials:
        row, mlflow_run = rows[trial.number], runs[trial.user_attrs["fitgap.mlflow_run_id"]]
        assert row["duration_s"] == pytest.approx(row["finished_at"] - row["started_at"])
        assert mlflow_run.data.metrics["duration_s"] == pytest.approx(row["duration_s"])
        assert mlflow_run.data.metrics["wait_s"] == pytest.approx(row["wait_s"])
        assert row["executor_reason"] == mlflow_run.data.tags["fitgap.executor_reason"] == \
            "executor: keras; fake: keras as asked"  # the choice, then what the executor says
    run.check_consistent()

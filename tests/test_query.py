"""Read-only queries of the results database, on real SQLite and real PostgreSQL (which must be reachable).

Every refusal goes through the real CLI in-process: exit 2, one line, and the database unchanged.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from fitgap.studies.cli import main
from fitgap.tracking import readonly
from fitgap.tracking.query import QueryError, export, known_studies, query_text, run_sql, trials_frame
from fitgap.tracking.records import EpochRecord, LiveRecord, TrialRecord
from fitgap.tracking.results import ResultsDB, redact, sqlite_path

from conftest import snapshot

POSTGRES_ADMIN_URL = os.environ.get("FITGAP_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
STUDY = "course"


# ---------------------------------------------------------------- fixtures: small results databases


def make_trials(study: str, count: int, seed: int) -> list[TrialRecord]:
    """`count` trials with varied params and curves; every seventh one FAILed without epochs (NULL metrics)."""
    rng = random.Random(seed)
    trials = []
    for number in range(count):
        failed = number % 7 == 6
        epochs = () if failed else tuple(
            EpochRecord(number, e, {"loss": rng.uniform(0.1, 1), "val_loss": rng.uniform(0.1, 1),
                                    "loss_gap": rng.uniform(0, 0.05), "val_accuracy": rng.uniform(0.5, 1)})
            for e in range(3))
        params = {"learning_rate": rng.choice([0.01, 0.03, 0.05, 0.1]), "staircase": rng.random() < 0.5,
                  "activation": rng.choice(["relu", "tanh", "sigmoid"]), "regularizer": rng.choice(["none", "l1", "l2"]),
                  "hidden": [rng.choice([4, 11]), 2]}
        trials.append(TrialRecord(
            study=study, number=number, state="FAIL" if failed else "COMPLETE", params=params,
            values=None if failed else (rng.random(),), best_epoch=None if failed else rng.randrange(3),
            epochs=epochs, complexity={"params_total": 10 + number}, seed=number, device="cpu", slot=0,
            started_at=1_700_000_000.0, finished_at=1_700_000_000.0 + number, reason="boom" if failed else None))
    return trials


TRIALS = make_trials(STUDY, 40, seed=1)
OTHER = make_trials("other", 3, seed=2)


def fill(url: str) -> None:
    with ResultsDB(url) as db:
        for trial in TRIALS + OTHER:
            db.write_trial(trial)


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('query') / 'results.db'}"
    fill(url)
    return url


@pytest.fixture(scope="module")
def postgres_url():
    """A database of its own on the test server, filled once; the PostgreSQL tests fail, not skip, without it."""
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"fitgap_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.fail(f"PostgreSQL is not reachable at {redact(POSTGRES_ADMIN_URL)}: {exc.orig}")
    url = sa.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    fill(url)
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def url(request) -> str:
    return request.getfixturevalue(f"{request.param}_url")


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def assert_refused(result, expected: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0], lines[0]
    return lines[0]


def fingerprint(path: Path) -> tuple[str, int, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size, path.stat().st_mtime_ns


def pg_state(url: str) -> tuple:
    """Row counts and table names: what a slipped-through write would change."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            counts = tuple(conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar()
                           for t in ("trials", "trial_params", "epochs"))
            return counts, tuple(sorted(sa.inspect(conn).get_table_names()))
    finally:
        engine.dispose()


# ---------------------------------------------------------------- the where language, against Python


def best(t: TrialRecord, metric: str):
    return t.best.get(metric)


def final(t: TrialRecord, metric: str):
    return t.final.get(metric)


def nulls_last(value, number, descending=False):
    return (value is None, 0 if value is None else (-value if descending else value), number)


CASES = {
    "the course example": ("regularizer = 'l2' and best_loss_gap < 0.02", "best_val_loss",
                           lambda t: t.params["regularizer"] == "l2" and best(t, "loss_gap") is not None
                           and best(t, "loss_gap") < 0.02,
                           lambda t: nulls_last(best(t, "val_loss"), t.number)),
    "in, or, descending": ("regularizer in ('l1', 'none') or learning_rate >= 0.05", "-learning_rate",
                           lambda t: t.params["regularizer"] in ("l1", "none") or t.params["learning_rate"] >= 0.05,
                           lambda t: nulls_last(t.params["learning_rate"], t.number, descending=True)),
    "not, parentheses, col desc": ("not (activation = 'relu' or activation = 'tanh') and best_loss_gap is not null",
                                   "best_loss_gap desc",
                                   lambda t: t.params["activation"] == "sigmoid" and t.epochs,
                                   lambda t: nulls_last(best(t, "loss_gap"), t.number, descending=True)),
    "is null": ("best_loss_gap is null", None, lambda t: not t.epochs, lambda t: t.number),
    "booleans, integers": ("staircase = true and number <= 20", None,
                           lambda t: t.params["staircase"] and t.number <= 20, lambda t: t.number),
    "column against column": ("final_loss_gap > best_loss_gap", "value",
                              lambda t: t.epochs and final(t, "loss_gap") > best(t, "loss_gap"),
                              lambda t: nulls_last(t.values[0] if t.values else None, t.number)),
    "keywords in any case": ("REGULARIZER = 'l2' AND NOT Staircase = false Or state <> 'COMPLETE'", "-NUMBER",
                             lambda t: (t.params["regularizer"] == "l2" and t.params["staircase"])
                             or t.state != "COMPLETE",
                             lambda t: -t.number),
    "not in, nulls last": ("regularizer not in ('l2')", "best_val_accuracy",
                           lambda t: t.params["regularizer"] != "l2",
                           lambda t: nulls_last(best(t, "val_accuracy"), t.number)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_where_filters_and_orders_like_python(url, case):
    where, order_by, keep, key = CASES[case]
    expected = [t.number for t in sorted((t for t in TRIALS if keep(t)), key=key)]
    assert expected, "a case that selects nothing proves little"

    frame = trials_frame(url, STUDY, where=where, order_by=order_by)

    assert list(frame["number"]) == expected
    assert set(frame["study"]) == {STUDY}  # never another study's rows
    assert list(trials_frame(url, STUDY, where=where, order_by=order_by, limit=3)["number"]) == expected[:3]


def test_user_text_is_bound_not_spliced(sqlite_url):
    """A quote inside a string literal is data: the query finds nothing rather than breaking out of the string."""
    frame = trials_frame(sqlite_url, STUDY, where="regularizer = 'l2'' or ''1''=''1'")
    assert frame.empty
    assert not trials_frame(sqlite_url, STUDY, where="reason = 'boom'").empty


def test_the_dataframe_has_every_live_column_with_useful_dtypes(url):
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        live = [c["name"] for c in sa.inspect(conn).get_columns("trials")]
    engine.dispose()

    frame = trials_frame(url, STUDY)

    assert list(frame.columns) == [c for c in live if c != "id"]
    assert len(frame) == len(TRIALS)
    assert frame["number"].dtype == "Int64" and frame["params_total"].dtype == "Int64"
    assert frame["best_epoch"].dtype == "Int64" and frame["best_epoch"].isna().sum() == len(TRIALS) // 7
    assert frame["value"].dtype == "float64" and frame["best_loss_gap"].dtype == "float64"
    assert frame["staircase"].dtype == "boolean"
    assert pd.api.types.is_string_dtype(frame["regularizer"]) and pd.api.types.is_string_dtype(frame["hidden"])
    first = TRIALS[0]
    row = frame.iloc[0]
    assert row["best_loss_gap"] == first.best["loss_gap"] and row["hidden"] == json.dumps(first.params["hidden"])
    assert bool(row["staircase"]) is first.params["staircase"]
    assert list(trials_frame(url, STUDY, columns=["Number", "best_loss_gap"], limit=2).columns) == ["number", "best_loss_gap"]


def test_known_studies(url):
    assert known_studies(url) == [STUDY, "other"]


# ---------------------------------------------------------------- bad input: one line, exit 2


@pytest.mark.parametrize("option, value", [("--where", "best_lss_gap < 0.02"), ("--order-by", "-best_lss_gap"),
                                           ("--columns", "number,best_lss_gap")])
def test_unknown_column_is_one_line_naming_close_matches(sqlite_url, option, value):
    line = assert_refused(run("query", STUDY, "--results-url", sqlite_url, option, value), "unknown column 'best_lss_gap'")
    assert "best_loss_gap" in line


@pytest.mark.parametrize("where, expected", [
    ("best_loss_gap <", "but got the end"),
    ("best_loss_gap < 0.02 and", "but got the end"),
    ("(best_loss_gap < 0.02", "expected `)`"),
    ("regularizer = \"l2\"", "single quotes"),
    ("regularizer = l2", "single quotes ('l2')"),
    ("best_loss_gap = null", "is null"),
    ("best_loss_gap < 'small'", "compare it with a number"),
    ("regularizer = 2", "compare it with a 'quoted string'"),
    ("best_loss_gap < 0.02 regularizer = 'l2'", "expected `and`, `or` or the end"),
    ("1 < 2", "needs a column"),
    ("best_loss_gap ~ 1", "unexpected '~'"),
])
def test_a_where_syntax_error_is_one_line(sqlite_url, where, expected):
    assert_refused(run("query", STUDY, "--results-url", sqlite_url, "--where", where), expected)


def test_bad_order_by_format_limit_and_options(sqlite_url):
    assert_refused(run("query", STUDY, "--results-url", sqlite_url, "--order-by", "-value desc"), "`col desc`")
    assert_refused(run("query", STUDY, "--results-url", sqlite_url, "--format", "xml"), "'xml'")
    assert_refused(run("query", STUDY, "--results-url", sqlite_url, "--sql", "select 1"), "--sql takes no STUDY")
    assert_refused(run("query", "--results-url", sqlite_url), "known studies: course, other")
    with pytest.raises(QueryError, match="limit"):
        trials_frame(sqlite_url, STUDY, limit=0)


def test_unknown_study_lists_the_known_ones(url):
    line = assert_refused(run("query", "nope", "--results-url", url), "no study 'nope'")
    assert "known studies: course, other" in line
    with pytest.raises(QueryError, match="known studies: course, other"):
        trials_frame(url, "nope", where="best_loss_gap < 1")


def test_a_missing_results_database_is_an_error_and_is_not_created(tmp_path):
    workspace = tmp_path / "ws"
    assert_refused(run("query", STUDY, "--workspace", str(workspace)), "no results database")
    assert_refused(run("query", "--sql", "select 1", "--workspace", str(workspace)), "no results database")
    assert not workspace.exists()


# ---------------------------------------------------------------- output formats


def test_formats_table_csv_json(sqlite_url):
    args = ["query", STUDY, "--results-url", sqlite_url, "--where", "regularizer = 'l2' and final_loss_gap < 0.04",
            "--order-by", "best_val_loss", "--limit", "5"]
    expected = trials_frame(sqlite_url, STUDY, "regularizer = 'l2' and final_loss_gap < 0.04", "best_val_loss", 5)

    table = run(*args)
    header = table.output.splitlines()[0].split()
    assert table.exit_code == 0 and len(table.output.splitlines()) == 1 + len(expected)
    assert header[:3] == ["number", "state", "value"] and "best_fit_gap" in header and "final_loss_gap" in header
    assert "duration_s" in header and "hidden" not in header  # the readable set, plus the where's columns

    csv = pd.read_csv(io.StringIO(run(*args, "--format", "csv").output))
    assert list(csv.columns) == list(expected.columns)
    assert list(csv["number"]) == list(expected["number"])

    records = json.loads(run(*args, "--format", "json", "--columns", "number,best_loss_gap").output)
    assert records == [{"number": int(n), "best_loss_gap": g} for n, g in zip(expected["number"], expected["best_loss_gap"])]


def test_an_empty_result_says_so(sqlite_url):
    result = run("query", STUDY, "--results-url", sqlite_url, "--where", "number > 1000")
    assert result.exit_code == 0 and result.output == "no matching trials\n"
    assert run("query", STUDY, "--results-url", sqlite_url, "--where", "number > 1000", "--format", "json").output \
        == "[]\n"


# ---------------------------------------------------------------- --sql reads


def test_sql_can_read(url):
    sql = "SELECT regularizer, count(*) AS n FROM trials WHERE study = 'course' GROUP BY regularizer ORDER BY 1"
    result = run("query", "--results-url", url, "--sql", sql, "--format", "csv")
    assert result.exit_code == 0, result.output
    got = pd.read_csv(io.StringIO(result.output))
    counts = pd.Series([t.params["regularizer"] for t in TRIALS]).value_counts().sort_index()
    assert list(got["regularizer"]) == list(counts.index) and list(got["n"]) == list(counts)
    joined = run_sql(url, "SELECT t.number, p.value FROM trials t JOIN trial_params p ON p.trial_id = t.id "
                          "WHERE t.study = 'course' AND p.name = 'hidden' ORDER BY t.number", limit=2)
    assert joined.to_dict("records") == [{"number": t.number, "value": json.dumps(t.params["hidden"])}
                                         for t in TRIALS[:2]]


def test_sql_quoted_semicolons_and_comments_are_one_statement(url):
    frame = run_sql(url, "SELECT 'a;b' AS text -- ; not a second statement\n")
    assert frame.to_dict("records") == [{"text": "a;b"}]
    if url.startswith("postgresql"):
        assert run_sql(url, "SELECT $$x; DELETE FROM trials; $$ AS text").iloc[0, 0] == "x; DELETE FROM trials; "


def test_sql_syntax_error_is_the_database_first_line(url):
    expected = 'near "selec": syntax error' if url.startswith("sqlite") else 'syntax error at or near "selec"'
    line = assert_refused(run("query", "--results-url", url, "--sql", "selec * from trials"), expected)
    assert line.startswith("fitgap: error: SQL error:")


# ---------------------------------------------------------------- --sql never writes: SQLite


WRITES = [
    "INSERT INTO trials (study, number, state) VALUES ('x', 1, 'COMPLETE')",
    "UPDATE trials SET value = 0",
    "DELETE FROM trials",
    "DROP TABLE epochs",
    "CREATE TABLE stolen (x)",
    "ATTACH DATABASE '{tmp}/x.db' AS x",
    "PRAGMA query_only=0",
    "PRAGMA writable_schema=1",
    "VACUUM INTO '{tmp}/x.db'",
    "SELECT count(*) FROM trials; DELETE FROM trials",
    "select 1;delete from trials",
    "SELECT $$x; DELETE FROM trials; $$",  # one PostgreSQL statement, which SQLite itself reads as three
    "WITH doomed AS (SELECT 1) DELETE FROM trials",  # starts like a read: only the database can refuse it
    "/* a comment first */ DELETE FROM trials",
]


@pytest.mark.parametrize("statement", WRITES)
def test_sqlite_refuses_writes_attach_and_pragma_and_changes_nothing(tmp_path, statement):
    db = tmp_path / "results.db"
    fill(f"sqlite:///{db}")
    before, files = fingerprint(db), snapshot(tmp_path)

    result = run("query", "--results-url", f"sqlite:///{db}", "--sql", statement.format(tmp=tmp_path))

    line = assert_refused(result, "statement")
    assert "only reading statements are allowed" in line or "exactly one statement is allowed" in line
    assert fingerprint(db) == before  # same bytes, same mtime
    assert snapshot(tmp_path) == files  # and no new file: ATTACH and VACUUM INTO created no x.db
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("statement", [s for s in WRITES if ";" not in s])
def test_the_sqlite_authorizer_alone_refuses_them(tmp_path, statement):
    """Below the pre-check: the read-only connection with its authorizer refuses each statement by itself."""
    db = tmp_path / "results.db"
    fill(f"sqlite:///{db}")
    before = fingerprint(db)

    with pytest.raises(QueryError, match=r"only reading statements are allowed: .* \(SQLite refused [A-Z_]+"):
        readonly.run_sqlite(db, statement.format(tmp=tmp_path), None)

    assert fingerprint(db) == before and not (tmp_path / "x.db").exists()
    assert readonly.run_sqlite(db, "SELECT count(*) FROM trials", None)[1] == [(len(TRIALS) + len(OTHER),)]


ENDLESS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
ROWS = {"sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) SELECT x FROM c",
        "postgres": "SELECT x FROM generate_series(1, {n}) AS x"}


def test_a_statement_that_runs_too_long_is_stopped_at_its_time_limit(url):
    started = time.monotonic()
    assert_refused(run("query", "--results-url", url, "--sql", ENDLESS, "--sql-timeout", "0.5"),
                   "the statement ran past its time limit of 0.5 s and was stopped")
    assert time.monotonic() - started < 10
    assert run("query", "--results-url", url, "--sql", "SELECT count(*) AS n FROM trials").exit_code == 0


def test_a_statement_returns_at_most_max_rows_unless_a_limit_is_given(url):
    rows = ROWS["postgres" if url.startswith("postgres") else "sqlite"]
    many = rows.format(n=readonly.MAX_ROWS + 1)
    assert_refused(run("query", "--results-url", url, "--sql", many), "returns more than 100,000 rows")
    result = run("query", "--results-url", url, "--sql", many, "--limit", "3", "--format", "csv")
    assert result.exit_code == 0 and result.output.split() == ["x", "1", "2", "3"], result.output
    assert len(run_sql(url, rows.format(n=readonly.MAX_ROWS))) == readonly.MAX_ROWS


def test_queries_and_exports_leave_the_sqlite_file_untouched(sqlite_url, tmp_path):
    db = sqlite_path(sqlite_url)
    before = fingerprint(db)
    trials_frame(sqlite_url, STUDY, "best_loss_gap < 0.02", "best_val_loss", 5)
    run_sql(sqlite_url, "SELECT * FROM epochs")
    export(sqlite_url, STUDY, tmp_path / "out.csv", "csv")
    for bad in (lambda: trials_frame(sqlite_url, "nope"), lambda: run_sql(sqlite_url, "selec 1")):
        with pytest.raises(QueryError):
            bad()
    assert fingerprint(db) == before


# ---------------------------------------------------------------- --sql never writes: PostgreSQL


@pytest.mark.parametrize("statement, expected", [
    # These pass the pre-check: the read-only transaction refuses them.
    ("WITH doomed AS (DELETE FROM trials RETURNING id) SELECT count(*) FROM doomed", "read-only transaction"),
    ("SELECT * INTO stolen FROM trials", "read-only transaction"),
    ("WITH s AS (SELECT set_config('transaction_read_only', 'off', true) AS x),"
     " d AS (DELETE FROM trials RETURNING id) SELECT * FROM s, d", "read-only transaction"),
    # These the pre-check refuses before anything runs.
    ("DELETE FROM trials", "only reading statements are allowed"),
    ("DROP TABLE epochs", "only reading statements are allowed"),
    ("COPY trials TO '/tmp/fitgap-stolen.csv'", "only reading statements are allowed"),
    ("SET default_transaction_read_only = off", "only reading statements are allowed"),
    ("SELECT 1; DELETE FROM trials", "exactly one statement is allowed"),
])
def test_postgresql_refuses_writes_and_changes_nothing(postgres_url, statement, expected):
    before = pg_state(postgres_url)
    assert_refused(run("query", "--results-url", postgres_url, "--sql", statement), expected)
    assert pg_state(postgres_url) == before


@pytest.mark.parametrize("statement, expected", [
    ("DELETE FROM trials", "cannot execute DELETE in a read-only transaction"),
    ("CREATE TABLE stolen (x int)", "read-only transaction"),
    ("SELECT 1; DELETE FROM trials", "cannot insert multiple commands into a prepared statement"),
])
def test_the_postgresql_connection_alone_refuses_them(postgres_url, statement, expected):
    """Below the pre-check: the read-only transaction and the extended protocol refuse by themselves."""
    before = pg_state(postgres_url)
    with pytest.raises(QueryError, match=expected):
        readonly.run_postgresql(sa.make_url(postgres_url), postgres_url, statement, None)
    assert pg_state(postgres_url) == before


def test_the_postgresql_api_reads_in_read_only_transactions(postgres_url):
    engine = readonly.open_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SHOW transaction_read_only")).scalar() == "on"
    engine.dispose()
    assert run_sql(postgres_url, "SHOW transaction_read_only").iloc[0, 0] == "on"


# ---------------------------------------------------------------- export


@pytest.mark.parametrize("format", ["csv", "parquet"])
def test_export_round_trips_through_pandas(url, tmp_path, format):
    out = tmp_path / f"trials.{format}"
    result = run("export", STUDY, "--format", format, "--out", str(out), "--results-url", url)
    assert result.exit_code == 0, result.output
    assert f"wrote {len(TRIALS)} trials" in result.output

    expected = trials_frame(url, STUDY)
    back = pd.read_parquet(out) if format == "parquet" else pd.read_csv(out, dtype=expected.dtypes.to_dict())
    pd.testing.assert_frame_equal(back, expected)


def test_export_defaults_to_the_study_name_in_the_current_folder(sqlite_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run("export", STUDY, "--format", "csv", "--results-url", sqlite_url).exit_code == 0
    assert len(pd.read_csv(tmp_path / f"{STUDY}.csv")) == len(TRIALS)


def test_bad_exports_are_one_line_and_write_nothing(sqlite_url, tmp_path):
    out = tmp_path / "out.xlsx"
    assert_refused(run("export", STUDY, "--format", "xlsx", "--out", str(out), "--results-url", sqlite_url),
                   "unknown export format 'xlsx'")
    assert_refused(run("export", "nope", "--format", "csv", "--out", str(out), "--results-url", sqlite_url),
                   "known studies: course, other")
    assert_refused(run("export", STUDY, "--format", "csv", "--out", str(tmp_path / "no" / "such.csv"),
                       "--results-url", sqlite_url), "cannot write")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["(" * 3000 + "best_loss_gap < 1" + ")" * 3000, "not " * 3000 + "best_loss_gap < 1",
                                   "(" * 3000, "regularizer = '" + "x" * 100_000 + "' and"])
def test_a_deeply_nested_or_huge_where_is_one_short_line(sqlite_url, where):
    line = assert_refused(run("query", STUDY, "--results-url", sqlite_url, "--where", where), "where: ")
    assert len(line) < 300, line
    if where.startswith(("(" * 100, "not not")):
        assert "at most 50 levels of `not` and parentheses" in line


def test_fifty_levels_of_nesting_still_filter(sqlite_url):
    where = "not " * 24 + "(" * 26 + "regularizer = 'l2'" + ")" * 26
    frame = trials_frame(sqlite_url, STUDY, where=where)
    assert len(frame) == sum(t.params["regularizer"] == "l2" for t in TRIALS)
    with pytest.raises(QueryError, match="at most 50 levels"):
        trials_frame(sqlite_url, STUDY, where="not " + where)


def test_a_running_trial_is_a_row_in_state_running_that_sorts_last_and_filters_out(tmp_path):
    """`fitgap query` shows what is training (state RUNNING, no value yet); `state = 'COMPLETE'` leaves it out."""
    url = f"sqlite:///{tmp_path / 'results.db'}"
    with ResultsDB(url) as db:
        for trial in make_trials("live", 3, seed=3):
            db.write_trial(trial)
        epoch = EpochRecord(3, 0, {"loss": 0.5, "val_loss": 0.6, "loss_gap": 0.1, "val_accuracy": 0.99}, ended_at=1.0)
        db.write_running(LiveRecord("live", 3, "run", {"learning_rate": 0.5, "regularizer": "l2"}, (epoch,), 3, "cpu",
                                    0, 1_700_000_000.0, 1.0, "keras"))
    frame = trials_frame(url, "live", order_by="-value")
    finished = sorted(make_trials("live", 3, seed=3), key=lambda t: -t.values[0])
    assert list(frame["number"]) == [t.number for t in finished] + [3]  # no value yet: last
    assert frame.iloc[-1]["state"] == "RUNNING" and pd.isna(frame.iloc[-1]["value"])
    assert frame.iloc[-1]["final_loss_gap"] == 0.1 and pd.isna(frame.iloc[-1]["best_loss_gap"])
    assert list(trials_frame(url, "live", where="state = 'COMPLETE'")["number"]) == [0, 1, 2]
    assert query_text(url, "live", where="state = 'RUNNING'", format="csv").splitlines()[1].startswith("live,3,RUNNING")

"""A racing study's rounds in the sweep (docs/sweeps.md, Racing): the queue of seeds, the round decisions
(race_decision.decide, a pure function) and their record on the parent run.

A trial is one (configuration, seed): the grid point's params plus `seed`, enqueued as fixed params.
The creator enqueues seeds 0 .. min_seeds-1 of every configuration. A round is over when no trial is
WAITING or RUNNING (failed ones are re-queued first, stopped ones go back as they were); then the first
worker to see that decides it, records it and enqueues one more seed for each survivor.

Race-free: every worker checks the state under one study-wide lock (SQLite: an flock on a file beside the
database, which only one machine can open; PostgreSQL: pg_advisory_lock, held on its own connection), and
what it does under the lock is idempotent: a round already recorded (study user attr racing_round_<k>) is
not decided again, and a survivor's next seed already in the study is not enqueued again (skip_if_exists
on the seed's params). A decider killed between recording a round and enqueuing its seeds leaves the
enqueuing to the next worker that looks. Two workers deciding at once therefore enqueue each seed once."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from .. import csv_cells, schema, tracking
from . import race_decision
from ..config import UserError
from ..safe_files import NotRegular, open_lock
from ..stop import STOP
from .study_file import StudySpec

ROUND_ATTR = "racing_round_"   # + k: study user attr, round k's decision (JSON-able dict)
STOPPED_ATTR = schema.RACING_STOPPED_BY_TAG  # also a study user attr: the race is over
CURVE_ATTR = "racing_curve"    # trial user attr: [[epoch, elapsed_time_s, test_acc], ...] of its finished run
POLL_S = 1.0                   # s between looks while another worker trains the round's last seeds
CSV_COLUMNS = ("round", "configuration", "seeds", "reached", "ert_s", "p_value", "decision", "target",
               "stopped_by", "max_seeds", "alpha")  # report/race_section.py reads them


def first_queue(spec: StudySpec) -> list[tuple[dict, dict]]:
    """(params, user attrs) of the trials the creator enqueues: seeds 0 .. min_seeds-1 of every configuration,
    seed by seed (round 1 fills evenly whatever the number of workers)."""
    return [({**p, "seed": s}, {schema.GRID_POINT_ATTR: i})
            for s in range(spec.racing.min_seeds) for i, p in enumerate(spec.grid)]


def label(point: dict) -> str:
    """A configuration's name in racing.csv and the tags: its searched fields, as the report writes them."""
    return ", ".join(f"{k}={v}" for k, v in point.items())


def curve(history: list[dict]) -> list[list[float]]:
    """A finished run's [[epoch, clock, accuracy], ...] (history includes the epochs before a resume)."""
    return [[i + 1, float(h[schema.CLOCK]), float(h[schema.ACCURACY])] for i, h in enumerate(history)]


@contextlib.contextmanager
def study_lock(storage_url: str, storage, name: str):
    """One holder at a time across the study's workers (see the module doc)."""
    if storage_url.startswith("postgresql"):
        from sqlalchemy import text

        key = int.from_bytes(hashlib.sha256(f"racing:{name}".encode()).digest()[:8], "big", signed=True)
        with storage.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        return
    import fcntl

    from sqlalchemy.engine import make_url

    db = Path(make_url(storage_url).database or "optuna.db")
    lock = db.with_name(f"{db.name}.racing-{hashlib.sha256(name.encode()).hexdigest()[:12]}.lock")
    try:
        f = open_lock(lock)  # O_NOFOLLOW: a link planted beside a shared database creates nothing elsewhere
    except NotRegular as e:
        raise UserError(f"racing: {e}; move it away") from None
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def has_work(st: optuna.Study, storage, w) -> bool:
    """The worker loop's condition for a racing study: a WAITING trial to pop, now or once the round that
    other workers are finishing is decided (waited for, polling); False when the race is over or STOP."""
    while not STOP():
        optuna.storages.fail_stale_trials(st)  # a dead worker's trial: failed and re-queued
        states = [t.state for t in st.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))]
        if TrialState.WAITING in states:
            return True
        if not states:  # the round is over: decide it (or find it decided), then look again
            with study_lock(w.storage, storage, w.spec.name):
                if not step(st, w.spec, w.parent_run_id, w.tracking_uri):
                    return False
            continue
        time.sleep(POLL_S)  # the round's last trials train elsewhere
    return False


def step(st: optuna.Study, spec: StudySpec, parent: str, uri: str) -> bool:
    """Under the lock, with nothing WAITING or RUNNING: make sure the next seeds are queued, deciding the
    round that just ended if nobody has; False when the race is over."""
    trials = st.get_trials(deepcopy=False)
    if any(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in trials):
        return True  # someone else enqueued meanwhile
    attrs = st.user_attrs
    if STOPPED_ATTR in attrs:
        return False
    rounds = [attrs[f"{ROUND_ATTR}{k}"] for k in range(1, 10_000) if f"{ROUND_ATTR}{k}" in attrs]
    if rounds and rounds[-1]["stopped_by"]:  # its decider died before it could say so
        return _stop(st, spec, parent, uri, rounds[-1])
    if rounds and _enqueue(st, spec, rounds[-1]):
        return True  # a decider died before enqueuing: done now
    live = rounds[-1]["survivors"] if rounds else list(range(len(spec.grid)))
    k, seeds = len(rounds) + 1, spec.racing.min_seeds + len(rounds)
    r = _decide(trials, spec, live)
    names = [label(p) for p in spec.grid]
    record = {"round": k, "seeds": seeds, "target": r.target, "leader": r.leader,
              "stopped_by": r.stopped_by or (racing.MAX_SEEDS_REACHED if seeds >= spec.racing.max_seeds else None),
              "survivors": [names.index(c) for c in sorted(r.survivors, key=lambda c: c != r.leader)],  # leader 1st
              "rows": json.loads(r.table.to_json(orient="records"))}
    st.set_user_attr(f"{ROUND_ATTR}{k}", record)  # first the decision, then its consequences
    _log_round(spec, parent, uri, [*rounds, record], trials)
    if record["stopped_by"]:
        return _stop(st, spec, parent, uri, record)
    _enqueue(st, spec, record)
    print(f"[{spec.name}] racing round {k} ({seeds} seeds): {len(record['survivors'])} of {len(live)} "
          f"configurations go on to seed {seeds}", flush=True)
    return True


def _stop(st: optuna.Study, spec: StudySpec, parent: str, uri: str, record: dict) -> bool:
    """The race's end on the parent run (racing_winner, or the configurations still tied; racing_stopped_by)."""
    names = [label(p) for p in spec.grid]
    winners = [names[i] for i in record["survivors"]]
    if not tracking.run_deleted(parent, uri):  # deleted mid-study: the sweep's end says how to go on (results.py)
        tracking.set_run_tags(parent, {schema.RACING_STOPPED_BY_TAG: record["stopped_by"], schema.RACING_WINNER_TAG:
                                       winners[0] if len(winners) == 1 else "tied: " + " | ".join(winners)}, uri)
    st.set_user_attr(STOPPED_ATTR, record["stopped_by"])
    print(f"[{spec.name}] racing round {record['round']}: stopped ({record['stopped_by']}); "
          f"{'winner' if len(winners) == 1 else 'tied'}: {' | '.join(winners)}", flush=True)
    return False


def _decide(trials: list, spec: StudySpec, live: list[int]) -> race_decision.Round:
    """race_decision.decide on the COMPLETE trials' curves; spent_s sums every finished run's clock."""
    from ..report import DEFAULT_TARGETS

    names = [label(p) for p in spec.grid]
    done = [t for t in trials if t.state == TrialState.COMPLETE and CURVE_ATTR in t.user_attrs]
    curves = {str(t.number): t.user_attrs[CURVE_ATTR] for t in done}
    config = {str(t.number): names[int(t.user_attrs[schema.GRID_POINT_ATTR])] for t in done}
    targets = tuple(spec.report_targets or DEFAULT_TARGETS)
    runs = race_decision.runs_from_curves(curves, config, targets)
    spent = float(runs["clock_end_s"].sum()) if len(runs) else 0.0
    return race_decision.decide(runs, [names[i] for i in live], targets, spec.racing, spent)


def _enqueue(st: optuna.Study, spec: StudySpec, record: dict) -> bool:
    """The next seed of each survivor of a decided round, unless it is in the study already (skip_if_exists
    compares fixed params); True if anything was enqueued."""
    if record["stopped_by"]:
        return False
    seed = record["seeds"]
    have = {json.dumps(t.system_attrs.get("fixed_params", t.params), sort_keys=True, default=str)
            for t in st.get_trials(deepcopy=False)}
    added = False
    for i in record["survivors"]:
        params = {**spec.grid[i], "seed": seed}
        if json.dumps(params, sort_keys=True, default=str) not in have:
            st.enqueue_trial(params, user_attrs={schema.GRID_POINT_ATTR: i}, skip_if_exists=True)
            added = True
    return added


def _log_round(spec: StudySpec, parent: str, uri: str, rounds: list[dict], trials: list) -> None:
    """Round k's metrics (step k) and racing.csv (every round so far) on the parent run. A parent run deleted
    mid-study takes nothing (MLflow refuses every write to it): the round stays recorded in the study, the
    next round after a restore writes racing.csv with every round, and the sweep's end says how to go on."""
    if tracking.run_deleted(parent, uri):
        return
    k = rounds[-1]["round"]
    spent = sum(1 for t in trials if t.state == TrialState.COMPLETE)
    tracking.log_run_data(parent, uri, metrics={schema.RACING_LIVE: len(rounds[-1]["rows"]),
                                                schema.RACING_SEEDS_SPENT: spent}, step=k)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / schema.RACING_CSV
        with open(path, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(CSV_COLUMNS)
            for r in rounds:
                for row in r["rows"]:
                    out.writerow(map(csv_cells.cell, [
                        r["round"], row["configuration"], row["seeds"], row["reached"], row["ert"], row["p_value"],
                        row["decision"], r["target"], r["stopped_by"] or "", spec.racing.max_seeds,
                        spec.racing.alpha_at(r["seeds"])]))
        tracking.log_run_data(parent, uri, files=[path])

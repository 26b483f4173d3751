"""Report stage 1: MLflow -> pandas. Which runs a report covers, and their per-epoch histories.

Everything MLflow-specific goes through `googlenet_study.tracking`; this module sees plain dicts."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from .. import schema, tracking
from ..config import UserError, field_names
from ..safe_files import open_regular, write_atomically
from ..tracking.bulk import POINT
from . import reading as reading_mod
from .reading import Reading
from ..schema import EPOCH_METRICS, NOT_CONFIG, REQUIRED_EPOCH_METRICS, STUDY_TAGS, SUMMARY_METRICS, TRIAL_TAGS


class _Bar(tqdm):
    """tqdm without its monitor thread (it only tunes how often a bar redraws): the report forks a child for
    its CSVs (report/__init__._beside) only while no other thread runs."""
    monitor_interval = 0


CACHE_ENV = "GOOGLENET_STUDY_CACHE"  # folder for cached histories of finished runs; "off" disables
# What a value may be (else the run is listed under "Runs with invalid metrics" and the value is not used):
ACCURACIES = schema.FRACTIONS  # in [0, 1]
TIMES = schema.SECONDS         # >= 0
# An invalid value of one of these leaves the run out of its accuracy statistics (and, since times to target are
# read off test_acc, out of the time statistics); an invalid time leaves it out of the time statistics.
ACCURACY_FEEDS = (schema.ACCURACY, schema.BEST_ACC, schema.FINAL_ACC)
FROM_HISTORY = (schema.BEST_ACC, schema.FINAL_ACC)  # read off the per-epoch test_acc, whatever the run logged
INVALID_COLUMNS = ["run_id", "run_name", "metric", "epoch", "value", "problem"]
NOT_RECORDED_COLUMNS = ["run_id", "run_name", schema.RECORD_VERSION_TAG, "not_recorded"]  # the tag's value
STORED_INF = 1.7976931348623157e308  # MLflow's SQL store writes +-inf as +-sys.float_info.max


@dataclass
class Fetched:
    runs: pd.DataFrame            # one row per counted run: run_id, run_name, start_time, params (strings;
    #                               device cuda:N as cuda), study, trial, device_name, host, hardware_changed
    epochs: pd.DataFrame          # one row per counted run per epoch: run_id, epoch, every per-epoch metric
    excluded: pd.DataFrame        # run_id, run_name, status, reason
    incomplete: pd.DataFrame      # run_id, run_name, missing: counted runs that lack some metrics
    params: list[str]             # config params of the counted runs (all but NOT_CONFIG; resolved.* applied)
    logged_summary: pd.DataFrame  # run_id + every summary metric: as logged (NaN stays NaN), else from the history
    source: dict = field(default_factory=dict)
    invalid: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=INVALID_COLUMNS))  # one row per
    #                               value out of range or not finite; that value is NaN in epochs/logged_summary
    disagreeing: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=INVALID_COLUMNS))  # a logged
    #                               best/final accuracy that its per-epoch test_acc does not give (both values);
    #                               the history's value is the one used
    not_recorded: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=NOT_RECORDED_COLUMNS))  # counted
    #                               runs whose record version came before some metrics (schema.METRIC_SINCE):
    #                               those are "not recorded by this version", never in `incomplete`


def select(experiment: str, study: str | None = None, parent_run: str | None = None,
           filter_string: str | None = None, uri: str | None = None) -> tuple[list[dict], list[dict], set[str]]:
    """(training runs in scope, parent runs in scope, root runs of the study): leaves of the run tree only;
    a sweep's parent run and a trial that aggregates repeats are not training runs."""
    runs = tracking.search_runs_all(experiment, filter_string, uri)
    tree = tracking.search_runs_all(experiment, None, uri) if filter_string and (study or parent_run) else runs
    parent_of = {r["run_id"]: r["tags"].get("mlflow.parentRunId") for r in tree}
    has_children = {p for p in parent_of.values() if p}
    roots: set[str] = set()
    if study is not None or parent_run is not None:
        if parent_run is not None:
            roots = {parent_run} & set(parent_of)
            if not roots:
                raise UserError(f"--parent-run: no run {parent_run!r} in experiment {experiment!r}")
        tagged = {r["run_id"] for r in tree if study is not None and _tag(r, STUDY_TAGS) == study}
        if parent_run is None:  # the study's parent: named after it (or tagged with it) and nested in nothing
            roots = {r["run_id"] for r in tree if not parent_of[r["run_id"]]
                     and (r["run_name"] == study or r["run_id"] in tagged)}
        if not roots and not tagged:
            raise UserError(f"--study: no sweep named {study!r} in experiment {experiment!r} "
                            f"(no parent run of that name, no run tagged study_name={study!r})")
        members = set(tagged)
        for rid in parent_of:  # walk up: children, grandchildren (a trial's repeats), ...
            p, seen = rid, 0
            while p and seen < 10:
                if p in roots or p in tagged:
                    members.add(rid)
                    break
                p, seen = parent_of.get(p), seen + 1
        runs = [r for r in runs if r["run_id"] in members - roots]
    if not runs:
        what = f" matching --filter {filter_string!r}" if filter_string else ""
        raise UserError(f"no runs{what} in experiment {experiment!r}"
                        + (f" under {'study ' + repr(study) if study else 'parent run ' + parent_run}"
                           if study or parent_run else ""))
    leaves = [r for r in runs if r["run_id"] not in has_children]
    parents = [r for r in runs if r["run_id"] in has_children]
    return leaves, parents, roots


def fetch(experiment: str, study: str | None = None, parent_run: str | None = None,
          filter_string: str | None = None, uri: str | None = None, cache_dir: Path | None = None,
          reading: Reading = Reading()) -> Fetched:
    """Stage 1, one named step each: the runs in scope (select), the finished ones (_finished), those with the
    metrics a report needs and their per-epoch rows (_counted), the frames (_runs_frame, _epochs_frame,
    _logged_frame), values out of range refused (refuse_invalid), the summaries read off the history
    (summaries) and what each run lacks (_lacking). `reading` says how another tool's runs are read
    (report/reading.py); its defaults read this tool's."""
    leaves, parents, roots = select(experiment, study, parent_run, filter_string, uri)
    finished, excluded = _finished(leaves, parents)
    histories = _histories(finished, uri, cache_dir, reading)
    reading_mod.check(finished, histories, reading)  # a metric or param the user named that no run has
    counted, missing_of, older_of = _counted(finished, histories, excluded, reading)
    runs, params, unique = _runs_frame(counted, reading)
    names = runs.set_index("run_id")["run_name"]
    epochs = _epochs_frame(reading_mod.frame(counted, histories, reading))
    epochs, logged, invalid = refuse_invalid(epochs, _logged_frame(counted), names)
    invalid = _as_named(invalid, reading)
    summary, disagreeing = summaries(epochs, logged, pd.DataFrame([{k: k in r["metrics"] for k in SUMMARY_METRICS}
                                                                   for r in counted]))
    refused = set(zip(invalid["run_id"], invalid["metric"]))  # listed as invalid, not again as missing
    disagreeing = disagreeing.loc[np.array([k not in refused for k in zip(disagreeing["run_id"],
                                                                             disagreeing["metric"])], dtype=bool)]
    disagreeing = disagreeing.assign(run_name=disagreeing["run_id"].map(names))
    ours = {r["run_id"] for r in counted if reading_mod.is_ours(r)}  # another tool's runs lack no metric of ours
    nan = {rid: what for rid, what in nan_metrics(epochs, summary).items() if rid in ours}
    incomplete, older = _lacking(missing_of, older_of, nan, refused, names)
    source = {"experiment": experiment, "study": study, "parent_run": parent_run, "filter": filter_string,
              "tracking_uri": tracking.redact(tracking.tracking_uri(uri)), "roots": sorted(roots)}
    if not reading.as_logged or not all(reading_mod.is_ours(r) for r in counted):  # another tool's runs: Scope
        source.update(accuracy_metric=reading.accuracy, by=reading.by, seed_param=reading.seed,
                      unique_params=unique, ours=sum(reading_mod.is_ours(r) for r in counted),
                      theirs=sum(not reading_mod.is_ours(r) for r in counted))
    return Fetched(runs, epochs, pd.DataFrame(excluded, columns=["run_id", "run_name", "status", "reason"]),
                   incomplete, params, summary, source, invalid, disagreeing, older)


def _excluded(r: dict, reason: str) -> dict:
    return {"run_id": r["run_id"], "run_name": r["run_name"], "status": r["status"], "reason": reason}


def _finished(leaves: list[dict], parents: list[dict]) -> tuple[list[dict], list[dict]]:
    """(the FINISHED training runs, with their resolved params; the runs excluded so far, with why)."""
    excluded = [_excluded(r, "parent run (sweep or repeats), not a training run") for r in parents]
    finished = []
    for r in leaves:
        if r["status"] == "FINISHED":
            finished.append(r)
        else:
            excluded.append(_excluded(r, f"status {r['status']}: only FINISHED runs count"))
    # What a run ran with: under `mlflow run`, resolved.device (cpu) replaces device (auto, as given).
    finished = [{**r, "params": schema.resolved_params(r["params"])} for r in finished]
    if not finished:
        raise UserError(f"no FINISHED runs in scope ({len(leaves)} training runs found, none finished)")
    return finished, excluded


def _counted(finished: list[dict], histories: dict[str, dict], excluded: list[dict], reading: Reading):
    """(the runs that count: every metric a report needs; run_id -> metrics it lacks that its record version
    logs; run_id -> (record version, metrics it lacks that its version did not log)). A run
    without a metric the report requires (reading.required: REQUIRED_EPOCH_METRICS for this tool's runs) is
    appended to `excluded`; another tool's runs lack nothing else (they never had this tool's metrics)."""
    missing_of, older_of, counted = {}, {}, []
    for r in finished:
        h = histories[r["run_id"]]
        required = reading.required(r)
        if reading_mod.is_ours(r):
            absent = [k for k in EPOCH_METRICS if not len(h.get(k, ()))] + [k for k in SUMMARY_METRICS
                                                                              if k not in r["metrics"]]
            version = schema.record_version(r["tags"])
            missing = [k for k in absent if schema.recorded_by(k, version)]
            older_of[r["run_id"]] = (version, [k for k in absent if k not in missing])
        else:
            missing, older_of[r["run_id"]] = [k for k in required if not len(h.get(k, ()))], (None, [])
        if any(k in missing for k in required):
            excluded.append(_excluded(r, "missing per-epoch " + ", ".join(k for k in required if k in missing)))
            continue
        missing_of[r["run_id"]] = missing
        counted.append(r)
    if not counted:
        needs = "test_acc and time metrics" if reading == Reading() else \
            " and ".join(dict.fromkeys(k for r in finished for k in reading.required(r)))
        raise UserError(f"no FINISHED run in scope has per-epoch {needs}{_clock_hint(finished, reading)}")
    return counted, missing_of, older_of


def _runs_frame(counted: list[dict], reading: Reading) -> tuple[pd.DataFrame, list[str], list[str]]:
    """(Fetched.runs, Fetched.params, params left out as unique to each run): one row per counted run; the
    config params in RunConfig's field order (reading.config_params: --by, or every one that may vary)."""
    params, unique = reading_mod.config_params(counted, reading, field_names(), NOT_CONFIG)
    runs = pd.DataFrame([{"run_id": r["run_id"], "run_name": r["run_name"], "start_time": r["start_time"],
                          "seed": r["params"].get(reading.seed, ""), **{p: r["params"].get(p, "") for p in params},
                          "study": _tag(r, STUDY_TAGS), "trial": _tag(r, TRIAL_TAGS),
                          **{t: r["tags"].get(t, "") for t in (schema.DEVICE_NAME_TAG, schema.HOST_TAG,
                                                               schema.HARDWARE_CHANGED_TAG)}} for r in counted])
    if "device" in runs:  # sweep workers on one multi-GPU host run on cuda:0, cuda:1, ...: the same hardware
        runs["device"] = runs["device"].str.replace(r"^cuda:\d+$", "cuda", regex=True)
    return runs, params, unique


def _clock_hint(finished: list[dict], reading: Reading) -> str:
    """Another tool's runs on this tool's clocks: they have no elapsed_time_s; say which clock reads them."""
    if reading.clock.metric in EPOCH_METRICS and not any(reading_mod.is_ours(r) for r in finished):
        return (" (these runs were not logged by googlenet-study: name their accuracy with --accuracy-metric "
                "and read time with --clock timestamps or --clock metric:NAME)")
    return ""


PERCENT_HINT = " (percent? --accuracy-metric takes a fraction in [0, 1])"


def _as_named(invalid: pd.DataFrame, reading: Reading) -> pd.DataFrame:
    """The invalid values under the names the runs logged them by (--accuracy-metric, not test_acc), and an
    accuracy in (1, 100] said to look like percent."""
    acc = invalid["metric"] == schema.ACCURACY
    pct = acc & (invalid["problem"] == "outside [0, 1]") & (invalid["value"].astype(float) > 1) & \
        (invalid["value"].astype(float) <= 100)
    if not pct.any() and reading.accuracy == schema.ACCURACY:
        return invalid
    invalid = invalid.copy()
    invalid.loc[pct, "problem"] = invalid.loc[pct, "problem"] + PERCENT_HINT
    invalid.loc[acc, "metric"] = reading.accuracy
    return invalid


def _epochs_frame(epochs: pd.DataFrame) -> pd.DataFrame:
    """One row per counted run per epoch, every per-epoch metric a column (NaN where no run logged it)."""
    for k in EPOCH_METRICS:
        if k not in epochs:
            epochs[k] = float("nan")
    return epochs


def _logged_frame(counted: list[dict]) -> pd.DataFrame:
    """run_id and every summary metric as the run logged it (NaN: not logged)."""
    return pd.DataFrame([{"run_id": r["run_id"], **{k: r["metrics"].get(k, np.nan) for k in SUMMARY_METRICS}}
                         for r in counted])


def _lacking(missing_of: dict, older_of: dict, nan: dict[str, list[str]], refused: set,
             names: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(Fetched.incomplete, Fetched.not_recorded): per counted run, the metrics it lacks (absent, or NaN at
    every epoch; a refused value is listed as invalid instead) and those its record version did not log."""
    for rid, what in nan.items():
        missing_of[rid] += [w for w in what if w.split(" ")[0] not in missing_of[rid] + older_of[rid][1]
                            and (rid, w.split(" ")[0]) not in refused]
    incomplete = [{"run_id": rid, "run_name": names[rid], "missing": ", ".join(m)}
                  for rid, m in missing_of.items() if m]
    older = [{"run_id": rid, "run_name": names[rid], schema.RECORD_VERSION_TAG: v, "not_recorded": ", ".join(m)}
             for rid, (v, m) in older_of.items() if m and rid in missing_of]
    return (pd.DataFrame(incomplete, columns=["run_id", "run_name", "missing"]),
            pd.DataFrame(older, columns=NOT_RECORDED_COLUMNS))


def refuse_invalid(epochs: pd.DataFrame, logged: pd.DataFrame,
                   names: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(epochs, logged summaries, invalid): every value that is not finite (MLflow stores +-inf as +-1.8e308)
    or out of range (an accuracy outside [0, 1], a negative time, an elapsed_time_s that goes down) becomes
    NaN, and `invalid` lists it (INVALID_COLUMNS) so the report can say which run lost which value."""
    epochs, logged = epochs.sort_values(["run_id", "epoch"]).reset_index(drop=True), logged.copy()
    found = []
    for frame, per_epoch in ((epochs, True), (logged, False)):
        for k in (*ACCURACIES, *TIMES):
            if k not in frame:
                continue
            v = frame[k].to_numpy(dtype=float)
            v = np.where(v >= STORED_INF, np.inf, np.where(v <= -STORED_INF, -np.inf, v))
            with np.errstate(invalid="ignore"):
                out = (v < 0) | (v > 1) if k in ACCURACIES else v < 0
            problem = np.where(np.isinf(v), "not finite", "outside [0, 1]" if k in ACCURACIES else "negative")
            if k == schema.CLOCK and per_epoch:  # the clock is cumulative: it never goes back
                prev = frame.groupby("run_id", sort=False)[k].shift()
                with np.errstate(invalid="ignore"):
                    down = ~out & (v < prev.to_numpy(dtype=float))
                problem, out = np.where(down, "decreasing", problem), out | down
            bad = np.flatnonzero(out | np.isinf(v))
            if len(bad):
                found.append(pd.DataFrame({"run_id": frame["run_id"].to_numpy()[bad], "metric": k,
                                           "epoch": frame["epoch"].to_numpy()[bad] if per_epoch else pd.NA,
                                           "value": v[bad], "problem": problem[bad]}))
                frame.loc[bad, k] = np.nan
    invalid = pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=INVALID_COLUMNS)
    invalid["run_name"] = invalid["run_id"].map(names)
    invalid["epoch"] = invalid["epoch"].astype("Int64")
    return epochs, logged, invalid[INVALID_COLUMNS]


def summaries(epochs: pd.DataFrame, logged: pd.DataFrame,
              was_logged: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(run_id + SUMMARY_METRICS, disagreeing). Accuracies come from the history whatever was logged: best =
    the highest finite test_acc (NaN when none), final = the last epoch's test_acc (NaN when that is NaN: never
    an earlier epoch's, never a logged summary). total = what the run logged (a logged NaN stays NaN), else the
    last epoch's elapsed_time_s. `disagreeing` (INVALID_COLUMNS, run_name empty) lists every logged best/final
    that the history does not give, with both values. `epochs` is in (run_id, epoch) order."""
    g = epochs.groupby("run_id", sort=False)
    hist = pd.DataFrame({schema.BEST_ACC: g[schema.ACCURACY].max(),
                         schema.FINAL_ACC: g[schema.ACCURACY].last(skipna=False),
                         schema.TOTAL_TIME: g[schema.CLOCK].last(skipna=False)})
    out = logged.set_index("run_id")
    found = []
    for k in SUMMARY_METRICS:
        from_history = hist[k].reindex(out.index)
        if k in FROM_HISTORY:
            said, got = out[k].to_numpy(float), from_history.to_numpy(float)
            with np.errstate(invalid="ignore"):
                differ = was_logged[k].to_numpy() & ~((said == got) | (np.isnan(said) & np.isnan(got)))
            found += [{"run_id": rid, "run_name": "", "metric": k, "epoch": pd.NA, "value": v,
                       "problem": f"disagrees with its history: logged {v:.6g}, per-epoch {schema.ACCURACY} gives "
                                  + (f"{h:.6g}" if not np.isnan(h) else "none (NaN)")}
                      for rid, v, h in zip(out.index[differ], said[differ], got[differ])]
            out[k] = from_history
        else:
            out[k] = out[k].where(was_logged[k].to_numpy(), from_history)
    disagreeing = pd.DataFrame(found, columns=INVALID_COLUMNS).astype({"epoch": "Int64"})
    return out.reset_index(), disagreeing


def nan_metrics(epochs: pd.DataFrame, summary: pd.DataFrame) -> dict[str, list[str]]:
    """run_id -> what it lacks beyond absent keys: a per-epoch accuracy or clock that is NaN at every epoch,
    a summary that is NaN (logged so, or the last epoch's value was NaN)."""
    out: dict[str, list[str]] = {}
    g = epochs.groupby("run_id", sort=False)
    for k in (schema.ACCURACY, schema.CLOCK):
        for rid in g[k].count().loc[lambda c: c == 0].index:
            out.setdefault(rid, []).append(f"{k} (NaN at every epoch)")
    for k in SUMMARY_METRICS:
        for rid in summary.loc[summary[k].isna(), "run_id"]:
            out.setdefault(rid, []).append(f"{k} (NaN)")
    return out


def _tag(r: dict, names: tuple[str, ...]) -> str:
    return next((r["tags"][n] for n in names if n in r["tags"]), "")


def _epoch_keys(r: dict) -> list[str]:
    """Per-epoch metric keys of a run: what it logged, less summaries and MLflow's system metrics."""
    keys = [k for k in r["metrics"] if not k.startswith(("system/", schema.TIME_TO_TARGET_PREFIX))
            and k not in SUMMARY_METRICS]
    return sorted(set(keys))


def _histories(runs: list[dict], uri: str | None, cache_dir: Path | None,
               reading: Reading = Reading()) -> dict[str, dict]:
    """Metric histories of FINISHED runs; cached on disk by (tracking URI, run id, end time), since a
    finished run's metrics no longer change."""
    cache = _cache_file(uri, cache_dir)
    cached = read_cache(cache) if cache is not None else {}
    keys = {r["run_id"]: reading.keys(r, _epoch_keys(r)) for r in runs}
    todo = {r["run_id"]: keys[r["run_id"]] for r in runs
            if cached.get(r["run_id"], (None,))[0] != (r["end_time"], tuple(keys[r["run_id"]]))}
    out = {r["run_id"]: cached[r["run_id"]][1] for r in runs if r["run_id"] not in todo}
    if todo:
        with _Bar(total=len(todo), desc="metric histories", unit="run", disable=None, leave=False) as bar:
            out.update(tracking.metric_histories(todo, uri, progress=bar.update))
    if cache is not None and todo:
        end = {r["run_id"]: (r["end_time"], tuple(keys[r["run_id"]])) for r in runs}
        cached.update({rid: (end[rid], out[rid]) for rid in todo})
        try:
            cache.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # histories: readable by us only
            write_atomically(cache, lambda f: write_cache(f, cached))
        except OSError:
            pass
    return out


# The history cache, format 1 (histories-<key>.npz, read with allow_pickle=False: data, never code): "header",
# JSON as uint8: {"format": 1, "runs": [[run_id, end_time, [key, ...], [points of each key, ...], [epoch key, ...]],
# ...]}; "points": every (step, value, timestamp ms) in the header's order, one structured array of POINT
# (written as one concatenation, read back as slices of it: no Python per value).
CACHE_FORMAT = 1


def write_cache(f, cached: dict) -> None:
    """{run_id: ((end_time, keys), {key: POINT array})} into the open binary file `f`. (concatenate's dtype=
    spares numpy a structured-dtype promotion per array: 240,000 histories, 2.4 -> 0.6 s.)"""
    runs = [[rid, end_time, list(hist), [len(p) for p in hist.values()], list(keys)]
            for rid, ((end_time, keys), hist) in cached.items()]
    points = [p for _, hist in cached.values() for p in hist.values()]
    header = json.dumps({"format": CACHE_FORMAT, "runs": runs}).encode()
    np.savez(f, header=np.frombuffer(header, dtype=np.uint8),
             points=np.concatenate(points, dtype=POINT) if points else np.empty(0, dtype=POINT))


def read_cache(cache: Path) -> dict:
    """What write_cache wrote, checked; {} when there is no file. A file that is not one (a pickle, a FIFO,
    a forged header) is one warning line on stderr and {}: the report is slower, the cache rewritten."""
    try:
        with open_regular(cache) as f:
            if f.read(4) != b"PK\x03\x04":  # np.load would take anything else for a .npy or a pickle
                raise ValueError("not an .npz file")
            f.seek(0)
            with np.load(f, allow_pickle=False) as z:
                header, points = z["header"], z["points"]
        if header.dtype != np.uint8 or header.ndim != 1 or points.dtype != POINT or points.ndim != 1:
            raise ValueError("arrays of the wrong type")
        return _checked(json.loads(header.tobytes()), points)
    except FileNotFoundError:
        return {}
    except Exception as e:  # noqa: BLE001 - whatever the file holds, the cure is to rebuild it
        why = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        print(f"googlenet-study report: warning: history cache {cache} is unusable ({why}); rebuilding it",
              file=sys.stderr)
        return {}


def _checked(header, points: np.ndarray) -> dict:
    if not isinstance(header, dict) or header.get("format") != CACHE_FORMAT or not isinstance(header.get("runs"), list):
        raise ValueError(f"not a history cache of format {CACHE_FORMAT}")
    out, at = {}, 0
    for rid, end_time, names, counts, keys in header["runs"]:
        if not (isinstance(rid, str) and (end_time is None or type(end_time) is int)
                and all(isinstance(k, str) for k in (*names, *keys)) and len(names) == len(counts)
                and all(type(n) is int and n >= 0 for n in counts)):
            raise ValueError("a malformed run entry")
        hist = {}
        for k, n in zip(names, counts):
            hist[k], at = points[at:at + n], at + n
        out[rid] = ((end_time, tuple(keys)), hist)
    if at != len(points):
        raise ValueError(f"{len(points)} points, its header counts {at}")
    return out


def _cache_file(uri: str | None, cache_dir: Path | None) -> Path | None:
    where = cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "googlenet-study"
    if str(where) == "off":
        return None
    u = tracking.tracking_uri(uri)
    if u.startswith("sqlite:///") and not u.startswith("sqlite:////"):  # relative to the working folder
        u = "sqlite:///" + os.path.abspath(u[len("sqlite:///"):])
    key = hashlib.sha256(u.encode()).hexdigest()[:16]
    return Path(where) / f"histories-{key}.npz"  # never a .pkl: one of those is not read

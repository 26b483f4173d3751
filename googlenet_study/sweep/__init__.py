"""Stage 6: a sweep. An Optuna study (storage: SQLite or PostgreSQL) whose trials are MLflow child
runs of one parent run, trained by the same `train()` as `googlenet-study train`.

The study's own pieces, which the run pipeline and the statistics may import (tests/test_imports.py gives
each its floor; none imports the runner below):
  outage         riding out an outage of the study's database or tracking server (retries, `Unavailable`)
  space          a study file's search space: values, ranges and grid points of config fields
  pruners        the pruners a study file may name, each with its Optuna builder (`PRUNERS`)
  samplers       the samplers a study file may name, each with its Optuna builder (`SAMPLERS`)
  study_file     the study file (experiments/*.yaml) validated into a frozen `StudySpec`, which also says
                 what the study does (`is_grid`, `races`, `nests_seed_runs`, `prunes`): the runner asks it
  race_decision  a racing round's decision from the runs' curves: statistics only, never the report

The runner, each module importing only those above it in this list (and the pieces above):
  storage        the Optuna storage: SQLite made safe for several processes, outages waited out
  race_rounds    a racing study's rounds: its queue of seeds, round decisions (race_decision) under a study lock
  setup          the study and its parent run, created by exactly one process (the names it writes)
  trial          one trial: the Optuna objective, calling train(); `Worker`, what a worker process needs
  worker         one worker's loop over the study's queue (`work`)
  processes      the workers of one machine as processes, signals passed on; planning them
  results        the parent run's results at the end, and the report
  slurm          a Slurm job array of workers (a launcher: it uses the sweep, the sweep never uses it)
  command        `googlenet-study sweep FILE`: validate, create or join, run the workers, conclude
This file imports nothing: `import googlenet_study.sweep.storage` loads only what that module needs.

Race-free by construction, on one machine or many:
- the study is created with `load_if_exists=False`: exactly one process wins; it makes the parent
  run, enqueues every grid point once and then marks the study ready; the others wait for that;
- grid points are WAITING trials that workers pop (one SQL transaction per pop: PostgreSQL locks
  the row, SQLite transactions take the write lock first: storage.py), so each point runs once;
  a trial Optuna creates when the queue ran dry in between is marked `surplus` and skipped;
- failed trials are re-queued (`max_retries`), so are trials of killed workers (heartbeat);
- a trial stopped by SIGTERM/SIGINT goes back in the queue as it was (no retry used up) and its
  run, ended KILLED, resumes from its checkpoint when the queue hands the point out again; so does
  a trial whose database or tracking server stayed down past storage_timeout_s (sweep/outage.py);
- a signal before the study is ready (validation, creation) stops the command at once: a study it
  was creating is deleted with its parent run, so the same command starts afresh (setup.py)."""

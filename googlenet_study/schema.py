"""The names a run is recorded under: MLflow metric, param and tag keys, defined once.

Engine, tracking, sweep, study, report and tests import them from here; docs/reference.md's "What MLflow holds"
documents each (tests/test_schema.py fails when a produced name is not documented there;
tests/test_names.py when a name is spelled again outside this file). Adding a per-epoch metric the report
shows (say peak_memory_mb) touches four files: here (its constant, TRAIN_METRICS or EVAL_METRICS,
EPOCH_METRICS, PER_EPOCH_MEANS, and METRIC_SINCE: the record version it arrives in), engine.py (its value, by
name), docs/reference.md's "What MLflow holds" and reports/README.md (its summary.csv columns); MLflow,
epochs.csv, the report's tables and CSVs follow from here, and runs logged before it say "not recorded by this
version", not "missing" (docs/development.md, "Adding a per-epoch metric")."""

from __future__ import annotations

# ---- per-epoch metrics: logged once per epoch, step = epoch (from 1), timestamp = when it ended --------
TRAIN_LOSS = "train_loss"             # CE of the main head, mean per image over the epoch
TRAIN_AUX_LOSS = "train_aux_loss"     # sum of the aux arms' CE (unweighted), mean per image
TRAIN_TOTAL_LOSS = "train_total_loss"  # train_loss + aux_weight * train_aux_loss
TRAIN_ACC = "train_acc"               # fraction of training images the main head got right
TRAIN_TIME = "train_time_s"           # s: this epoch's training (input waits included)
DATA_TIME = "data_time_s"             # s: of that, waiting for input
THROUGHPUT = "throughput_img_s"       # training images per second
TEST_LOSS, ACCURACY = "test_loss", "test_acc"  # main head, eval mode, whole test split; ACCURACY is what
                                      # pruning, targets and the report's curves follow
EVAL_TIME = "eval_time_s"             # s: evaluating the whole test split
EPOCH_TIME = "epoch_time_s"           # s: train_time_s + eval_time_s
CLOCK = "elapsed_time_s"              # s: the study's clock, cumulative epoch_time_s (downtime not counted):
                                      # what "wall-clock time" means in this tool
# Who measures what: train_one_epoch, evaluate, epoch_metrics (each returns its metrics by name).
TRAIN_METRICS = (TRAIN_LOSS, TRAIN_AUX_LOSS, TRAIN_TOTAL_LOSS, TRAIN_ACC, TRAIN_TIME, DATA_TIME, THROUGHPUT)
EVAL_METRICS = (TEST_LOSS, ACCURACY, EVAL_TIME)
CLOCK_METRICS = (EPOCH_TIME, CLOCK)
# Every per-epoch metric, in the order of epochs.csv and the report's epochs.csv.
EPOCH_METRICS = (TRAIN_LOSS, TRAIN_AUX_LOSS, TRAIN_TOTAL_LOSS, TRAIN_ACC, TEST_LOSS, ACCURACY,
                 EPOCH_TIME, TRAIN_TIME, EVAL_TIME, DATA_TIME, CLOCK, THROUGHPUT)
assert set(EPOCH_METRICS) == set(TRAIN_METRICS + EVAL_METRICS + CLOCK_METRICS)
# Without these a run says nothing about accuracy over wall-clock time (the report lists it, uncounted).
REQUIRED_EPOCH_METRICS = (ACCURACY, EPOCH_TIME, CLOCK)

# ---- summary metrics: logged once, at the end (step = the last epoch) -----------------------------------
BEST_ACC, FINAL_ACC = "best_test_acc", "final_test_acc"  # max and last test_acc over the epochs
TOTAL_TIME = "total_time_s"                              # s: elapsed_time_s at the last epoch
SUMMARY_METRICS = (BEST_ACC, FINAL_ACC, TOTAL_TIME)
TIME_TO_TARGET_PREFIX = "time_to_test_acc_"  # + P: elapsed_time_s of the first epoch with test_acc >= P/100
# What the report shows of the other per-epoch metrics: each run's mean over its epochs, then per configuration
# summary.csv's <metric>_n, _mean, _ci_low, _ci_high (reports/README.md) and a column of the report's summary
# table, headed by the value. A per-epoch metric added here is summarised with no edit to the report.
PER_EPOCH_MEANS = {EPOCH_TIME: "s / epoch"}
# By unit (what a valid value is, how it is shown): fractions in [0, 1], and seconds >= 0.
FRACTIONS = (ACCURACY, TRAIN_ACC, BEST_ACC, FINAL_ACC)
SECONDS = (EPOCH_TIME, TRAIN_TIME, EVAL_TIME, DATA_TIME, CLOCK, TOTAL_TIME)


# ---- the record's versions: which metrics a run's code could log ---------------------------------------
# A metric added after the first version is absent from the runs logged before it: the report says "not
# recorded by this version" for them and counts it missing only for a run whose version should have logged it.
RECORD_VERSION_TAG = "record_version"  # the RECORD_VERSION of the code that started the run (set once, at start)
FIRST_RECORD_VERSION = 1              # a run without the tag was logged before it existed: version 1
# Per-epoch or summary metric -> the record version that first logged it; every metric not named here: 1.
# Adding a metric: name it here with the current RECORD_VERSION + 1 (RECORD_VERSION follows).
METRIC_SINCE: dict[str, int] = {}
RECORD_VERSION = max(METRIC_SINCE.values(), default=FIRST_RECORD_VERSION)


def record_version(tags: dict[str, str]) -> int:
    """The record version a run was logged by: its record_version tag, FIRST_RECORD_VERSION without one; a tag
    that is not a whole number >= 1 (not ours) counts as RECORD_VERSION, so nothing it lacks is excused."""
    v = tags.get(RECORD_VERSION_TAG)
    if v is None:
        return FIRST_RECORD_VERSION
    return int(v) if v.isascii() and v.isdigit() and int(v) >= 1 else RECORD_VERSION


def recorded_by(metric: str, version: int) -> bool:
    """Whether a run of record version `version` logs `metric` (else its absence is not a gap of the run's)."""
    return METRIC_SINCE.get(metric, FIRST_RECORD_VERSION) <= version


def time_to_target(p: float) -> str:
    """The summary metric for target accuracy `p` percent: time_to_test_acc_70 (not logged if unreached)."""
    return f"{TIME_TO_TARGET_PREFIX}{p:g}"


def is_time_to_target(key: str) -> bool:
    return key.startswith(TIME_TO_TARGET_PREFIX)


def target_of(key: str) -> str:
    """time_to_test_acc_70 -> '70'."""
    return key[len(TIME_TO_TARGET_PREFIX):]


# ---- params beyond the config fields (every RunConfig field is a param under its own name) --------------
TOTAL_PARAMS, TRAINABLE_PARAMS = "total_params", "trainable_params"  # the model's parameter counts
MODEL_PARAMS = (TOTAL_PARAMS, TRAINABLE_PARAMS)
PROJECT_PARAMS = ("experiment",)      # `mlflow run`: the `main` entry point's parameters beyond config fields
PROJECT_SWEEP_PARAMS = ("file", "workers")  # `mlflow run -e sweep`: on the parent run when it is MLflow's run
# Params that never change a result (config.digest() leaves the first three out too); `seed` is what varies
# within one configuration; none of these split configurations in a report.
NOT_CONFIG = frozenset({"seed", "data_dir", "download", "system_metrics", *MODEL_PARAMS, *PROJECT_PARAMS})
# `mlflow run` logs every entry-point parameter as given ("auto", "none") before train() starts; MLflow
# params are immutable, so train() records what it resolved them to under RESOLVED_PREFIX + field.
RESOLVED_PREFIX = "resolved."


def resolved_params(params: dict[str, str]) -> dict[str, str]:
    """A run's params as it ran: resolved.<name> replaces <name> (`mlflow run` logged it as given)."""
    n = len(RESOLVED_PREFIX)
    out = {k: v for k, v in params.items() if not k.startswith(RESOLVED_PREFIX)}
    out.update({k[n:]: v for k, v in params.items() if k.startswith(RESOLVED_PREFIX)})
    return out


# ---- tags --------------------------------------------------------------------------------------------
# Provenance (tracking.provenance_tags), set once when a run starts.
GIT_COMMIT_TAG, GIT_DIRTY_TAG = "git_commit", "git_dirty"      # the source tree's commit, and if it had edits
PYTHON_VERSION_TAG, TORCH_VERSION_TAG, TORCHVISION_VERSION_TAG = "python_version", "torch_version", \
    "torchvision_version"
CUDA_VERSION_TAG, CUDNN_VERSION_TAG = "cuda_version", "cudnn_version"
DEVICE_NAME_TAG = "device_name"       # the GPU's or the CPU's model name: the report's hardware
HOST_TAG = "host"                     # the machine's host name
DATASET_DIGEST_TAG = "dataset_digest"  # sha256 prefix of the exact images and labels (data.Dataset.digest)
CONFIG_HASH_TAG = "config_hash"       # RunConfig.digest(): what a resume must match
WEIGHTS_SOURCE_TAG, WEIGHTS_URL_TAG, WEIGHTS_ENUM_TAG, WEIGHTS_SHA256_TAG, WEIGHTS_FILE_TAG = \
    "weights_source", "weights_url", "weights_enum", "weights_sha256", "weights_file"
PROVENANCE_TAGS = (GIT_COMMIT_TAG, GIT_DIRTY_TAG, PYTHON_VERSION_TAG, TORCH_VERSION_TAG, TORCHVISION_VERSION_TAG,
                   CUDA_VERSION_TAG, CUDNN_VERSION_TAG, DEVICE_NAME_TAG, HOST_TAG, DATASET_DIGEST_TAG,
                   CONFIG_HASH_TAG, WEIGHTS_SOURCE_TAG, WEIGHTS_URL_TAG, WEIGHTS_ENUM_TAG, WEIGHTS_SHA256_TAG,
                   WEIGHTS_FILE_TAG)
# Why a run stopped early; a resume clears them (its own ending sets them again if it stops early too).
END_REASON_TAG = "end_reason"         # stopped by a signal, an outage, ... (the run is KILLED)
FAILURE_REASON_TAG, FAILURE_TRACEBACK_TAG = "failure_reason", "failure_traceback"  # a FAILED run's error
FAILURE_EPOCH_TAG, FAILURE_BATCH_TAG = "failure_epoch", "failure_batch"  # a non-finite loss: where (from 1)
END_TAGS = (END_REASON_TAG, FAILURE_REASON_TAG, FAILURE_TRACEBACK_TAG, FAILURE_EPOCH_TAG, FAILURE_BATCH_TAG)
# A run resumed on other hardware than it ran on: a JSON list of the device_names, in order; the report leaves
# such a run out of its time statistics (its seconds mix two machines).
HARDWARE_CHANGED_TAG = "hardware_changed"
CHECKPOINT_TAG = "checkpoint"         # the run's checkpoint file
RESUMED_AT_EPOCH_TAG, RESUMED_AT_BATCH_TAG = "resumed_at_epoch", "resumed_at_batch"  # where a resume took over
REPRODUCES_TAG = "reproduces_run_id"  # `googlenet-study reproduce`: the run it reran
RUN_TAGS = (CHECKPOINT_TAG, RESUMED_AT_EPOCH_TAG, RESUMED_AT_BATCH_TAG, HARDWARE_CHANGED_TAG, *END_TAGS,
            REPRODUCES_TAG, RECORD_VERSION_TAG)
# A sweep's runs: study_name on every run of a study; sweep_role parent | trial; trial_number on a trial's
# runs; seed_index on each seed run of a trial with repeats > 1.
STUDY_TAG, ROLE_TAG, TRIAL_TAG, SEED_INDEX_TAG = "study_name", "sweep_role", "trial_number", "seed_index"
PARENT_ROLE, TRIAL_ROLE = "parent", "trial"  # the values of ROLE_TAG
RETRY_OF_TAG = "retry_of_trial"       # a trial re-run after a failure: the number of the one it retries
PRUNED_TAG, PRUNED_AT_TAG = "pruned", "pruned_at"  # a pruned trial's run: true, and the epoch it stopped at
STORAGE_TAG = "optuna_storage"        # the study's Optuna storage URL (password redacted)
JOINED_PARENT_TAG = "joined_parent_run_id"  # a worker that joined a study another process set up
SWEEP_TAGS = (STUDY_TAG, ROLE_TAG, TRIAL_TAG, SEED_INDEX_TAG, RETRY_OF_TAG, PRUNED_TAG, PRUNED_AT_TAG,
              STORAGE_TAG, JOINED_PARENT_TAG)
# Optuna user attribute (not an MLflow name): a trial's MLflow run id, to find its run and checkpoint again.
MLFLOW_RUN_ID_ATTR = "mlflow_run_id"
# Optuna user attributes of a sweep's trials: the grid point's index; a trial made when the queue ran dry
# (never trained, left out everywhere); a FAIL trial that did not fail but was stopped and re-queued.
GRID_POINT_ATTR, SURPLUS_ATTR = "grid_point", "surplus"
STOPPED_BY_SIGNAL_ATTR, STOPPED_BY_OUTAGE_ATTR = "stopped_by_signal", "stopped_by_outage"
STUDY_TAGS = (STUDY_TAG, "study")     # read by the report (either spelling)
TRIAL_TAGS = (TRIAL_TAG, "trial")
# A frozen trunk (backbone=frozen) runs other ops for the same math (model.speed_tags).
FROZEN_TRUNK_TAG = "frozen_trunk"            # how: no autograd graph; BatchNorm in eval mode
FOLDED_CONVS_TAG = "frozen_bn_folded_convs"  # how many conv+BN blocks run as one conv
SPEED_TAGS = (FROZEN_TRUNK_TAG, FOLDED_CONVS_TAG)
# A frozen run trained on cached trunk features (feature_cache.py).
FEATURE_CACHE_TAG = "feature_cache"                  # built | reused (by this process) | off
FEATURE_CACHE_WARNING_TAG = "feature_cache_warning"  # why a run asking for the cache ran without it
FEATURE_CACHE_FILE_TAG = "feature_cache_file"        # the cache file's path
FEATURE_CACHE_TAGS = (FEATURE_CACHE_TAG, FEATURE_CACHE_WARNING_TAG, FEATURE_CACHE_FILE_TAG)
# Metric, logged once at step 0: s the features took to compute when built, charged to every run using them
# (added to its epoch 1's train_time_s, hence epoch_time_s and elapsed_time_s).
FEATURE_CACHE_BUILD_S = "feature_cache_build_s"

# ---- a sweep's parent run (one per study) --------------------------------------------------------------
STUDY_FILE_PARAM = "study_file"         # the study file's path as given
PARENT_PARAMS = (STUDY_TAG, "sampler", "sampler_seed", "objectives", "pruner", "n_trials", "max_retries",
                 "repeats", STORAGE_TAG, STUDY_FILE_PARAM,
                 "pruner_warmup_s")  # wallclock_median only: seconds, or first_epoch (the default)
BASE_PREFIX, SPACE_PREFIX = "base.", "space."  # + a config field: the study file's base value, searched values
N_TRIALS_PREFIX = "n_trials_"           # + an Optuna state: trial counts by state when the sweep ended
N_PARETO_METRIC = "n_pareto_trials"      # several objectives: size of the Pareto front
PARENT_METRICS = ("n_trials_complete", "n_trials_pruned", "n_trials_fail", "n_trials_running",
                  "n_trials_waiting", N_PARETO_METRIC)
BEST_TRIAL_PREFIX = "best_trial."        # + the objective: the best trial's value (one objective)
BEST_TRIAL_NUMBER_TAG, BEST_RUN_TAG = "best_trial_number", "best_mlflow_run_id"  # one objective
PARETO_TAG = "pareto_trial_numbers"      # several objectives: the Pareto front's trial numbers (JSON)
PARENT_TAGS = (BEST_TRIAL_NUMBER_TAG, BEST_RUN_TAG, PARETO_TAG)
BEST_PARAM_PREFIX = "best_param."        # + a searched field: the best trial's value of it
# A racing study (sweep/race_decision.py, sweep/race_rounds.py): per round k, at step k, and at the race's end.
RACING_LIVE = "racing_live_configurations"  # configurations that raced in round k
RACING_SEEDS_SPENT = "racing_seeds_spent"   # finished runs of the study when round k was decided
RACING_METRICS = (RACING_LIVE, RACING_SEEDS_SPENT)
RACING_WINNER_TAG = "racing_winner"         # the last configuration left, or "tied: A | B | ..." (leader first)
RACING_STOPPED_BY_TAG = "racing_stopped_by"  # one left | max_seeds | budget_s
RACING_TAGS = (RACING_WINNER_TAG, RACING_STOPPED_BY_TAG)
RACING_CSV = "racing.csv"                   # artifact: round, configuration, seeds, reached, ert_s, p_value, ...

# ---- a trial's own run (repeats > 1; its seed runs nest under it) ----------------------------------------
TRIAL_PARAMS = ("repeats", "seeds")      # + every searched field under its own name
# Each objective over the seeds: <objective> (= the mean) and <objective> + each suffix; _std is the sample std.
SPREAD_SUFFIXES = ("_mean", "_n", "_n_finite", "_std")

# ---- MLflow's limits on what it records (mlflow/utils/validation.py: MAX_PARAM_VAL_LENGTH,
# MAX_PARAMS_TAGS_PER_BATCH; a longer value or a bigger batch is rejected with INVALID_PARAMETER_VALUE) ----
MLFLOW_MAX_PARAM_CHARS = 6000       # characters of one param value
MLFLOW_MAX_PARAMS_PER_BATCH = 100   # params (and tags) in one log_batch call

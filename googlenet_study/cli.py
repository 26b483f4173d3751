"""The command line: `googlenet-study train | reproduce | sweep | report`.

Bad input anywhere ends in one line on stderr and exit status 2, before anything is written."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields

from . import schema
from .config import RunConfig, UserError, source_date_epoch
from .stop import STOP

EXIT_USAGE = 2


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """--field-name VALUE for every RunConfig field (booleans true/false, lists comma-separated)."""
    g = p.add_argument_group("run config (command line > --config file > defaults)")
    for f in fields(RunConfig):
        default = f.default if not isinstance(f.default, tuple) else ",".join(map(str, f.default))
        g.add_argument(_flag(f.name), dest=f.name, default=None, metavar="VALUE",
                       help=f"default: {default}")


def add_tracking_flags(p: argparse.ArgumentParser, experiment: bool = True) -> None:
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    if experiment:
        p.add_argument("--experiment", default="googlenet-study", help="MLflow experiment (default: %(default)s)")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage text is one `--help` away), and no
    abbreviated flags: `--epoch 3` must not silently mean `--epochs 3`."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="googlenet-study", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="one fine-tuning run, recorded in MLflow")
    t.add_argument("--config", help="YAML file of config fields")
    add_tracking_flags(t)
    t.add_argument("--run-name", default=None)
    t.add_argument("--checkpoint-dir", default=None,
                   help="where per-epoch checkpoints go (default: .checkpoints/ beside the tracking store)")
    t.add_argument("--keep-checkpoints", action="store_true", help="keep the checkpoint when the run finishes")
    t.add_argument("--resume", default="auto", help="auto | never | RUN_ID (default: auto)")
    add_config_flags(t)

    r = sub.add_parser("reproduce", help="re-run a recorded run from what MLflow holds; print the differences")
    r.add_argument("run_id")
    add_tracking_flags(r, experiment=False)
    r.add_argument("--experiment", default=None,
                   help="where the reproduction is recorded (default: the original run's experiment)")

    s = sub.add_parser("sweep", help="an Optuna study from a YAML file; trials are child MLflow runs")
    s.add_argument("file")
    s.add_argument("--workers", type=int, default=1, help="processes on this machine sharing the study")
    s.add_argument("--n-trials", type=int, default=None)
    s.add_argument("--storage", default=None, help="Optuna storage URL (default: sqlite:///optuna.db)")
    s.add_argument("--set", action="append", default=[], metavar="field=value", help="override a base field")
    s.add_argument("--no-report", action="store_true", help="skip the report at the end")
    s.add_argument("--checkpoint-dir", default=None,
                   help="where trials' checkpoints go (on a cluster: shared storage; default: the study "
                        "file's checkpoint_dir, else .checkpoints/ beside the tracking store)")
    s.add_argument("--slurm-array", type=int, default=None, metavar="N",
                   help="submit N Slurm array tasks, each a worker of this study, instead of running here")
    s.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an sbatch option for --slurm-array (partition=gpu, time=04:00:00, nodes=1, ...)")
    s.add_argument("--dry-run", action="store_true", help="with --slurm-array: print the job script, submit nothing")
    s.add_argument("--wait", action="store_true",
                   help="with --slurm-array: wait for the array to end, then write the report")
    add_tracking_flags(s, experiment=False)

    rep = sub.add_parser("report", help="HTML + PDF comparison from MLflow runs")
    rep.add_argument("--experiment", required=True)
    who = rep.add_mutually_exclusive_group()
    who.add_argument("--study", default=None, help="runs of this sweep (its parent run's name)")
    who.add_argument("--parent-run", default=None, help="runs under this parent run id")
    rep.add_argument("--filter", default=None, help="MLflow search filter, e.g. \"params.model = 'googlenet'\"")
    rep.add_argument("--targets", default=None, help="target accuracies in percent (default: 50,60,70,80)")
    rep.add_argument("--out", default=None, help="output folder (default: reports/<study or experiment>/)")
    rep.add_argument("--clock", default="epoch", help="time to target on: epoch (elapsed_time_s, training + "
                     "evaluation; default) | train (cumulative train_time_s) | timestamps (MLflow's timestamp of "
                     "each accuracy value, from the run's start: any tool's runs) | metric:NAME (a cumulative-"
                     "seconds metric logged at the accuracy's steps)")
    rep.add_argument("--accuracy-metric", default=schema.ACCURACY, metavar="NAME",
                     help=f"the per-step metric holding accuracy as a fraction in [0, 1] (default: {schema.ACCURACY})")
    rep.add_argument("--by", default=None, metavar="PARAM[,PARAM...]",
                     help="the params that make a configuration (default: every param that varies, except the "
                          "seed and params whose value differs in every run)")
    rep.add_argument("--seed-param", default=None, metavar="NAME", help="the param holding the seed (default: seed)")
    rep.add_argument("--pool-hardware", action="store_true",
                     help="one configuration for runs of equal params on different hardware (the report says so)")
    add_tracking_flags(rep, experiment=False)
    return p


def config_from_args(args: argparse.Namespace) -> RunConfig:
    overrides = {f.name: getattr(args, f.name) for f in fields(RunConfig) if getattr(args, f.name) is not None}
    if args.config is not None:  # `--config ""` is a mistake to name, not "no file"
        return RunConfig.from_yaml(args.config, overrides)
    return RunConfig.from_dict(overrides, source="command line")


def check_experiment_flag(name: str) -> None:
    from .config import shown

    if not name.strip() or len(name) > 256 or not name.isprintable():
        raise UserError(f"--experiment: must be one line of 1 to 256 characters, got {shown(name)}")


def check_train_flags(args: argparse.Namespace) -> None:
    """The train flags that are not config fields, each refused in one line before anything is written."""
    from .config import dir_problem, shown

    check_experiment_flag(args.experiment)
    if args.run_name is not None and not (0 < len(args.run_name) <= 250 and args.run_name.isprintable()):
        raise UserError(f"--run-name: must be one line of 1 to 250 characters (MLflow's runs.name), "
                        f"got {shown(args.run_name)}")
    if args.checkpoint_dir is not None and dir_problem(args.checkpoint_dir):
        raise UserError(f"--checkpoint-dir: {dir_problem(args.checkpoint_dir)}")


def cmd_train(args: argparse.Namespace) -> int:
    from .checkpoint import Resume
    from .train import RunOptions, train

    cfg = config_from_args(args)
    check_train_flags(args)
    resume = Resume.parse(args.resume)  # auto | never | a 32-hex run id: no glob or path reaches the folder
    result = train(cfg, args.tracking_uri, args.experiment, RunOptions(
        run_name=args.run_name, resume=resume, checkpoint_dir=args.checkpoint_dir,
        keep_checkpoints=args.keep_checkpoints))
    print(one_line(result))
    return exit_status(result)


def exit_status(result) -> int:
    """0 finished; 128 + signal when stopped by one (143 SIGTERM, 130 SIGINT); 1 failed."""
    if result.status == "FINISHED":
        return 0
    return 128 + STOP.signum if result.status == "KILLED" and STOP.signum else 1


def one_line(result) -> str:
    s = result.summary
    if result.status != "FINISHED":
        return f"run {result.run_id} {result.status}: {result.failure_reason or ''}".strip()
    times = " ".join(f"{schema.target_of(k)}%@{v:.1f}s" for k, v in s.items() if schema.is_time_to_target(k))
    return (f"run {result.run_id} FINISHED: {len(result.history)} epochs in {s[schema.TOTAL_TIME]:.1f} s, "
            f"{schema.BEST_ACC} {s[schema.BEST_ACC]:.4f}, {schema.FINAL_ACC} {s[schema.FINAL_ACC]:.4f}"
            + (f", reached {times}" if times else ""))


def cmd_reproduce(args: argparse.Namespace) -> int:
    from . import tracking
    from .checkpoint import NEVER, RUN_ID
    from .config import short
    from .train import RunOptions, train

    uri = tracking.tracking_uri(args.tracking_uri)
    tracking.check_tracking_uri(uri)  # like train: before the store is opened (a sqlite file is not created)
    if not RUN_ID.fullmatch(args.run_id):
        raise UserError(f"run_id: {short(args.run_id, 60)!r} is not an MLflow run id (32 hexadecimal digits)")
    if args.experiment is not None:
        check_experiment_flag(args.experiment)
    cfg, _ = tracking.load_run_config(args.run_id, uri)  # a sweep's parent run, a run without a config: refused
    exp = args.experiment or tracking.run_experiment(args.run_id, uri)
    result = train(cfg, uri, exp, RunOptions(run_name=f"reproduce-{args.run_id[:8]}",
                                             tags={schema.REPRODUCES_TAG: args.run_id}, resume=NEVER))
    print(one_line(result))
    keys = (schema.TRAIN_LOSS, schema.TRAIN_ACC, schema.TEST_LOSS, schema.ACCURACY)
    old = {k: dict(tracking.metric_history(args.run_id, k, uri)) for k in keys}
    print("epoch  " + "  ".join(f"{'d_' + k:>14}" for k in keys))
    worst = 0.0
    for i, h in enumerate(result.history, start=1):
        diffs = [h[k] - old[k].get(i, float("nan")) for k in keys]
        worst = max([worst] + [abs(d) for d in diffs if d == d])
        print(f"{i:>5}  " + "  ".join(f"{d:>14.3e}" for d in diffs))
    print("bit-identical" if worst == 0.0 else f"max |difference| {worst:.3e}")
    return exit_status(result)


def cmd_sweep(args: argparse.Namespace) -> int:
    from . import tracking
    from .sweep import command, slurm
    from .sweep.storage import default_storage

    spec = command.load(args.file, args.set, args.n_trials, args.checkpoint_dir)  # every UserError first
    given = [f for f, on in (("--dry-run", args.dry_run), ("--wait", args.wait), ("--slurm-option", args.slurm_option))
             if on]
    if given and args.slurm_array is None:
        raise UserError(f"{given[0]}: only with --slurm-array N")
    if args.slurm_array is None:
        return command.run(spec, args.workers, args.storage, args.tracking_uri, args.no_report)
    if args.workers != 1:  # the workers run as a Slurm job array, not here
        raise UserError("--workers: with --slurm-array every array task is one worker; leave --workers out")
    uri = tracking.tracking_uri(args.tracking_uri)
    array = slurm.prepare(slurm.Array(spec, args.slurm_array, args.storage or default_storage(uri), uri,
                                      slurm.options(args.slurm_option), args.n_trials, tuple(args.set)))
    if args.dry_run:
        print(slurm.script(array), end="")
        return 0
    return command.run_array(array, args.wait, args.no_report)


def cmd_report(args: argparse.Namespace) -> int:
    from . import report
    return report.main(args)


COMMANDS = {"train": cmd_train, "reproduce": cmd_reproduce, "sweep": cmd_sweep, "report": cmd_report}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    STOP.install()  # SIGTERM/SIGINT: finish the batch, checkpoint, end the run KILLED
    try:
        source_date_epoch()  # before numpy: numpy.f2py reads it at import and dies on garbage with a traceback
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"googlenet-study {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"googlenet-study {args.command}: interrupted", file=sys.stderr)
        return 128 + (STOP.signum or 2)
    except Exception as e:
        damage = damaged_database(e)
        if damage is None:
            raise
        print(f"googlenet-study {args.command}: error: {_store_named(args)} is damaged ({damage}); restore it "
              f"from a backup or move it away", file=sys.stderr)
        return EXIT_USAGE


# What SQLite says of a file whose pages are not a database (the first pages are checked before a store is
# opened, tracking/sqlite.py; a page further in is only found when a query reaches it).
DAMAGE = ("database disk image is malformed", "file is not a database")


def damaged_database(e: BaseException | None) -> str | None:
    """SQLite's words when `e`, or what caused it, says a database file is damaged; else None."""
    seen = set()
    while e is not None and id(e) not in seen:
        said = next((d for d in DAMAGE if d in str(e)), None)
        if said:
            return said
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _store_named(args: argparse.Namespace) -> str:
    from .tracking import redact

    uri = redact(args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db")
    if args.command == "sweep":
        return f"the tracking store ({uri}) or the Optuna storage ({redact(args.storage or 'optuna.db')})"
    return f"the tracking store {uri}"


if __name__ == "__main__":
    sys.exit(main())

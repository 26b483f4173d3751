"""The Slurm job script cannot be hijacked by what it holds (fast: no Slurm, no store). Any string in any
field that reaches slurm/<study>.sbatch is either refused in one line (UserError, exit 2, nothing written)
or makes a script that bash parses, whose #SBATCH lines are exactly ours (as sbatch itself splits them),
whose only command is one `exec`, and which — run through bash with a printer in front of that command —
runs nothing else and passes every value through intact."""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import write_study

from googlenet_study.sweep import study_file
from googlenet_study.cli import main as cli_main
from googlenet_study.config import UserError
from googlenet_study.sweep import slurm

SPACE = " \t\n\v\f\r"  # C's isspace: what sbatch splits #SBATCH arguments at
# Strings a shell, sbatch or a terminal might read as more than text, mixed with anything at all.
NASTY = st.lists(st.sampled_from(list("\n\r\t\x00\x7f\x85\u2028 '\"\\$`;&|<>(){}[]#*?~!%=:/@-_.aZ9é")
                                 + ["hetjob", "$(touch x)", "${IFS}", "\\\n", "'\"'\"'"]), max_size=12).map("".join)
VALUES = st.one_of(NASTY, st.text(max_size=24))
FIELDS = ("name", "path", "checkpoint_dir", "storage", "uri", "cwd", "python", "set", "option_key",
          "option_value")
DEFAULTS = {"name": "s", "path": "/home/alice/study.yaml", "checkpoint_dir": "/shared/ckpt",
            "storage": "postgresql://alice@db.cluster/optuna", "uri": "https://mlflow.cluster",
            "cwd": "/home/alice", "python": "/venv/bin/python3", "set": "lr=0.1", "option_key": "partition",
            "option_value": "gpu"}


COMMENTS = {"# googlenet-study: 3 workers of one study (the exec line below), one per array task.",
            "# Preempted (SIGTERM 120 s before the kill) or cancelled with --signal=TERM: the worker",
            "# checkpoints, ends its run KILLED and re-queues its trial; a requeued task resumes it.",
            "# GOOGLENET_STUDY_STORAGE / GOOGLENET_STUDY_TRACKING_URI: set when it was submitted (they may hold "
            "a password)"}


def sbatch_arguments(rest: str) -> list[str]:
    """The arguments sbatch reads from an #SBATCH line (after the magic word): its _get_argument
    (src/sbatch/opt.c), applied until the line ends: quotes group, \\ escapes, an unquoted # ends it."""
    out, i, n = [], 0, len(rest)
    while True:
        while i < n and rest[i] in SPACE:
            i += 1
        arg, quoted, q, escaped = "", False, "", False
        while i < n and (quoted or rest[i] not in SPACE):
            c, i = rest[i], i + 1
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
                continue
            elif quoted and c == q:
                quoted = False
                continue
            elif not quoted and c in "\"'":
                quoted, q = True, c
                continue
            elif not quoted and c == "#":
                i = n
                break
            arg += c
        assert not quoted, f"sbatch: unmatched {q} in {rest!r}"
        if not arg:
            return out
        out.append(arg)


@pytest.fixture(scope="module")
def printer(tmp_path_factory) -> Path:
    """A stand-in for the task's command: prints its arguments, NUL-separated, and does nothing else."""
    d = tmp_path_factory.mktemp("bin")
    (d / "printargv").write_text("#!/bin/bash\nprintf '%s\\0' \"$@\"\n")
    (d / "printargv").chmod(0o755)
    return d


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    return study_file.load(str(write_study(tmp_path_factory.mktemp("study"), "s", {"seed": [0, 1]})))


def _array(spec, v: dict) -> slurm.Array:
    s = dataclasses.replace(spec, name=v["name"], path=v["path"], checkpoint_dir=v["checkpoint_dir"])
    option = slurm.options([f"{v['option_key']}={v['option_value']}"])
    return slurm.prepare(slurm.Array(s, 3, v["storage"], v["uri"], option, n_trials=5, sets=(v["set"],), cwd=v["cwd"],
                                     python=v["python"]))


def _expected_argv(v: dict) -> list[str]:
    def absolute(p: str) -> str:
        return os.path.normpath(os.path.join(v["cwd"], p))
    return [v["python"], "-m", "googlenet_study", "sweep", absolute(v["path"]), "--workers=1", "--no-report",
            f"--storage={v['storage']}", f"--tracking-uri={v['uri']}",
            *([f"--checkpoint-dir={absolute(v['checkpoint_dir'])}"] if v["checkpoint_dir"] else []),
            "--n-trials=5", f"--set={v['set']}"]


def _check_structure(text: str, v: dict) -> str:
    """The script's lines are ours, and its one command runs the task with every value intact (as shlex,
    which splits words as bash does, reads it); returns the command line."""
    lines = text.split("\n")
    assert lines[0] == "#!/bin/bash" and lines[-1] == ""
    assert [x for x in lines if not x.startswith("#")] == [lines[-2], ""]  # one command: the last line
    key = v["option_key"].strip().lstrip("-").replace("_", "-")
    expected = {"job-name": v["name"], "array": "0-2", "signal": "B:TERM@120", "requeue": None,
                "open-mode": "append", "output": str(Path(v["cwd"], "slurm", f"{v['name']}-%A_%a.out")),
                "chdir": v["cwd"], key: v["option_value"].strip()}
    sbatch = [sbatch_arguments(x[len("#SBATCH"):]) for x in lines if x.startswith("#SBATCH")]
    assert sbatch == [[f"--{k}" + ("" if w is None else f"={w}")] for k, w in expected.items()]
    comments = {x for x in lines if x.startswith("#") and not x.startswith(("#SBATCH", "#!"))}
    assert comments <= COMMENTS  # fixed text: no value of the user's in a comment
    words = shlex.split(lines[-2])
    env = {"${GOOGLENET_STUDY_STORAGE}": v["storage"], "${GOOGLENET_STUDY_TRACKING_URI}": v["uri"]}
    for ref, url in env.items():  # bash expands these from sbatch's environment, inside double quotes
        words = [w.replace(ref, url) if "=" + ref in w and w.startswith("--") else w for w in words]
    assert words == ["exec", *_expected_argv(v)]
    return lines[-2]


def _values(field: str, value: str) -> dict:
    v = {**DEFAULTS, field: value}
    if field == "checkpoint_dir" and not value:
        v["checkpoint_dir"] = None  # the study's own default: no --checkpoint-dir in the script
    return v


def _script_or_refusal(spec, v: dict) -> str | None:
    try:
        return slurm.script(_array(spec, v))
    except UserError as e:
        assert "\n" not in str(e)  # one line
        return None


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(FIELDS), value=VALUES)
def test_any_value_in_any_field_is_refused_or_makes_our_lines_and_one_command_with_it_intact(field, value, spec):
    v = _values(field, value)
    text = _script_or_refusal(spec, v)
    if text is not None:
        _check_structure(text, {**v, "checkpoint_dir": v["checkpoint_dir"] or ""})


@pytest.mark.slow  # bash runs each script: a process per example
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), value=VALUES)
def test_run_through_bash_any_script_made_passes_the_values_through_and_runs_nothing_else(
        field, value, spec, printer, tmp_path_factory):
    v = _values(field, value)
    text = _script_or_refusal(spec, v)
    if text is None:
        return
    v["checkpoint_dir"] = v["checkpoint_dir"] or ""
    _check_structure(text, v)
    tmp = tmp_path_factory.mktemp("job")
    path = tmp / "job.sbatch"
    path.write_text(text)
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    (tmp / "run").mkdir()
    path.write_text(text.replace("\nexec ", "\nexec printargv ", 1))  # the printer in front of the command
    env = {"PATH": f"{printer}:/usr/bin:/bin", "GOOGLENET_STUDY_STORAGE": v["storage"],
           "GOOGLENET_STUDY_TRACKING_URI": v["uri"]}
    r = subprocess.run(["bash", str(path)], cwd=tmp / "run", env=env, capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    assert r.stdout.decode("utf-8", "surrogateescape").split("\0")[:-1] == _expected_argv(v)
    assert not list((tmp / "run").iterdir())  # it made nothing


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_newline_in_a_slurm_option_is_refused_and_nothing_is_written_or_run(dry_run, tmp_path, monkeypatch,
                                                                              capsys):
    monkeypatch.chdir(tmp_path)
    path = write_study(tmp_path, "s", {"seed": [0, 1]})
    argv = ["sweep", str(path), "--slurm-array", "2", "--storage", "postgresql://u@db/o", "--tracking-uri",
            "http://mlflow:5000", "--slurm-option", "partition=gpu\ntouch x"] + (["--dry-run"] if dry_run else [])
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--slurm-option" in err and "'\\n'" in err, err
    assert not (tmp_path / "slurm").exists() and not (tmp_path / "x").exists()


def test_a_job_component_word_in_an_sbatch_value_is_refused(spec):
    with pytest.raises(UserError, match="heterogeneous job"):
        _array(spec, {**DEFAULTS, "option_value": "gpu HETJOB"})


def test_a_refused_url_is_named_without_its_password(spec):
    with pytest.raises(UserError) as e:
        _array(spec, {**DEFAULTS, "storage": "postgresql://alice:s3cret@db/optuna\ntouch x"})
    assert "s3cret" not in str(e.value) and str(e.value).startswith("--storage: holds '\\n'")

"""Where a report goes: a folder that `report` may replace only if a report wrote everything in it.

The report is built in a temporary folder beside its destination and moved there at the end. The
destination is replaced only if it is absent, empty, or a previous report: a folder holding MARKER,
which lists every file that report wrote, and nothing else. Any other folder (a home folder, `.`, a
report someone added notes to) is refused in one line before the build, and checked again before the
move; a signal during the build removes the temporary folder and leaves the destination as it was."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from ..config import UserError, dir_problem, short
from ..safe_files import out_of_space

MIN_FREE_BYTES = 1 << 20  # a report is ~1-5 MB (figures, PDF); under 1 MB free it is refused before the build
MARKER = ".googlenet-study-report"  # written last into every report folder: the files it may replace
RUN_ID = re.compile(r"[0-9a-f]{32}")  # an MLflow run id: the folder above a run's artifacts/
_HEADER = "# written by googlenet-study report; `report --out` replaces this folder only while it holds\n" \
          "# nothing but the files listed here (one a line, relative to the folder)\n"


def check(out: Path, label: str = "--out") -> None:
    """Refuse (UserError, one line naming the folder) a destination the report may not write or replace."""
    where = f"{label}: {short(str(out), 200)}"
    if not str(out) or out.name in ("", ".", ".."):
        raise UserError(f"{where} names a folder by '.' or '..'; give the report a folder of its own, "
                        f"e.g. reports/NAME")
    try:
        st = os.lstat(out)
    except FileNotFoundError:
        st = None
    except (OSError, ValueError) as e:  # a name too long, a component that is a file, a NUL
        raise UserError(f"{where}: not a usable path ({getattr(e, 'strerror', None) or e})") from None
    try:
        here, target = Path.cwd().resolve(), out.resolve()
    except (OSError, RuntimeError):  # Python 3.11 raises RuntimeError for a loop of links
        raise UserError(f"{where}: not a usable path (a loop of symbolic links)") from None
    if here == target or target in here.parents:
        raise UserError(f"{where} holds the current folder; give the report a folder of its own")
    run = next((p for p in (target, *target.parents) if p.name == "artifacts" and RUN_ID.fullmatch(p.parent.name)),
               None)
    if run is not None:  # <artifact root>/<experiment>/<run id>/artifacts: MLflow's, served and read back as a run's
        raise UserError(f"{where} lies inside run {run.parent.name}'s MLflow artifact folder ({short(str(run), 120)}); "
                        f"give the report a folder of its own")
    if st is None:
        problem = dir_problem(str(out))
        if problem:
            raise UserError(f"{where}: {problem}")
        _check_space(next(p for p in target.parents if p.exists()), label)
        return
    if os.path.islink(out):
        if not os.path.exists(out):
            raise UserError(f"{where}: a symbolic link to nothing, or a loop of links; give a folder")
        raise UserError(f"{where} is a symbolic link; give the folder it points to")
    if not os.path.isdir(out):
        raise UserError(f"{where} exists and is not a folder; give a new or empty folder, or a previous report")
    if os.path.ismount(out):  # checked before the build: renaming the finished report onto it fails (EBUSY)
        raise UserError(f"{where} is a mount point, which a finished report cannot be renamed onto; give a "
                        f"folder inside it (e.g. {short(str(out / 'report'), 120)})")
    extra = _not_a_report(out)
    if extra:
        raise UserError(f"{where} holds {extra}; a report replaces only an empty folder or a previous report "
                        f"(nothing else is deleted): give a new folder, or move that folder away yourself")
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise UserError(f"{where}: {short(str(out.parent.absolute()))} is not writable")
    _check_space(target.parent, label)


def _not_a_report(folder: Path) -> str | None:
    """None if `folder` is empty or holds only what its MARKER lists; else what it holds that is not."""
    try:
        names = os.listdir(folder)
    except OSError as e:
        return f"files that cannot be listed ({e.strerror})"
    if not names:  # no guess by file names: a user's own report.html and summary.csv are not a report's
        return None
    if MARKER not in names or not (folder / MARKER).is_file() or (folder / MARKER).is_symlink():
        return f"files no report wrote (no {MARKER} in it, e.g. {short(sorted(names)[0], 60)!r})"
    try:
        listed = {ln for ln in (folder / MARKER).read_text(encoding="utf-8").splitlines()
                  if ln and not ln.startswith("#")}
    except (OSError, UnicodeDecodeError):
        return f"an unreadable {MARKER}"
    for root, dirs, files in os.walk(folder):
        for name in sorted(dirs + files):
            rel = os.path.relpath(os.path.join(root, name), folder)
            if rel != MARKER and rel not in listed:
                return f"{short(rel, 60)!r}, which no report wrote"
    return None


@contextlib.contextmanager
def building(out: Path, label: str = "--out"):
    """Yield a new temporary folder beside `out`; on success it becomes `out` (a previous report is
    replaced, after `check` once more), on any exception or signal it is removed and `out` is untouched."""
    check(out, label)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        _mark(tmp)
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp made it private; the report is an ordinary folder
        check(out, label)  # the folder may have changed during the build
        if os.path.lexists(out):  # replace a previous report only once the new one is complete
            old = out.with_name(f".{out.name}.old-{time.time_ns()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if out_of_space(e):  # matplotlib, WeasyPrint and pandas wrap the OSError, or raise it mid-figure
            raise UserError(f"{label}: no space left on device: {out.parent.absolute()} (nothing was "
                            f"written); free some space or give another --out") from None
        raise


def _check_space(folder: Path, label: str) -> None:
    """A full disk is refused before the report is built (it would fail at its first figure)."""
    try:
        vfs = os.statvfs(folder)
    except OSError:
        return
    if vfs.f_bavail * vfs.f_frsize < MIN_FREE_BYTES:
        raise UserError(f"{label}: no space left on device: {folder.absolute()} "
                        f"({vfs.f_bavail * vfs.f_frsize // 1024} KiB free); free some space or give another --out")




def _mark(folder: Path) -> None:
    names = sorted(os.path.relpath(os.path.join(r, n), folder) for r, ds, fs in os.walk(folder) for n in ds + fs)
    (folder / MARKER).write_text(_HEADER + "".join(f"{n}\n" for n in names), encoding="utf-8")


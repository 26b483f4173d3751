"""Files in folders other people can write (a lab's shared checkpoint folder, a team's report cache):
written without following a planted link, read only when they are regular files.

Anyone who can write the folder can plant a symbolic link at a name this tool will open, or a FIFO where
it expects a file. So:
- a file is written to a temporary name made by `tempfile.mkstemp` (O_CREAT|O_EXCL: a name that exists,
  a link included, is never opened; the name is random, not our pid), fsynced, then renamed over the
  destination (`write_atomically`); a rename replaces a link, it never writes through one;
- a lock file is opened O_NOFOLLOW and created without following a link (`open_lock`);
- a file is read only after fstat of the very descriptor says it is a regular file, opened O_NONBLOCK so
  that a FIFO never blocks the open (`open_regular`); anything else is `NotRegular`, one line naming it."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


class NotRegular(OSError):
    """A path that is a FIFO, a device, a socket, a folder or a link where a regular file was expected."""


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """`write` into a new temporary file beside `path`, fsync, rename over: a kill at any moment leaves the old
    or the new file, never a part of one, and a link planted in the folder is never written through."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # 0600, O_EXCL
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600: the file gets the mode an open() would give it
        os.replace(tmp, path)
    except BaseException:  # a full disk, a second signal: leave no temp file behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def open_regular(path: Path) -> BinaryIO:
    """`path` open for reading, binary; `NotRegular` unless it is a regular file (a link to one is followed:
    callers that must stay in a folder check where it resolves), FileNotFoundError if it is absent."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once instead of waiting for a writer
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegular(f"{path} is {kind(mode)}, not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_lock(path: Path) -> BinaryIO:
    """A lock file at `path` (created if absent, never truncated) for flock; a symbolic link there is refused
    (ELOOP: NotRegular), as is anything but a regular file."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as e:
        if os.path.islink(path):
            raise NotRegular(f"{path} is a symbolic link, not a lock file") from None
        raise e
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegular(f"{path} is {kind(mode)}, not a lock file")
        return os.fdopen(fd, "r+b")
    except BaseException:
        os.close(fd)
        raise


def create_new(path: Path, text: str) -> None:
    """Write `text` to `path`, which must not exist (FileExistsError otherwise: a link there included)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def kind(mode: int) -> str:
    """What a file of this st_mode is, in words."""
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a symbolic link"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def _read_umask() -> int:
    mask = os.umask(0o022)  # read once, at import: os.umask sets as it reads, which a thread must not race
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def out_of_space(e: BaseException | None) -> bool:
    """Is ENOSPC (or a quota) somewhere in e's chain? Libraries wrap it: torch.save reports a full disk as a
    RuntimeError ("inline_container.cc ... unexpected pos") whose context is the OSError; matplotlib,
    WeasyPrint and pandas wrap it too."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False

"""Crash-safe file output: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from pathlib import Path

from gambar.errors import InvalidInputError

# atomic_write_bytes writes ".<name>.<8 random characters>.tmp" beside the target first
TMP_NAME_EXTRA = len("..12345678.tmp")


@functools.cache
def _file_mode() -> int:
    """Mode a plain open() would give a new file (mkstemp's 0600 would surprise users)."""
    # os.umask can only be read by setting it; done once, at first use.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a directory's entries (a rename is only durable once its directory is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush one file's contents to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _refuse_existing(path: Path) -> InvalidInputError:
    return InvalidInputError(f"{path} already exists; refusing to overwrite it")


def is_file(path: str | os.PathLike[str]) -> bool:
    """Path.is_file() that answers False, not OSError, for a name the system refuses outright
    (too long, a NUL): no such file can exist, so "not found" is the honest answer."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def check_writable(path: str | os.PathLike[str]) -> None:
    """Raise InvalidInputError now if a file could not be written at `path` later: it is a
    folder, its folder is under a file, or the nearest existing folder refuses new files.

    Leaves nothing behind: a probe file is made in the nearest existing folder and removed at
    once (as root, os.access says yes even to /proc)."""
    path = Path(path)
    try:
        if path.is_dir():
            raise InvalidInputError(f"{path} is a folder; give a file name inside it instead")
        folder = next(p for p in (path.parent, *path.parent.parents) if p.exists())
    except ValueError:  # os.stat refuses a NUL character
        raise InvalidInputError(f"{path!r} is not a valid file name") from None
    except OSError as exc:  # a name too long, a loop of links
        raise InvalidInputError(f"cannot write {path}: {exc.strerror}") from None
    if not folder.is_dir():
        raise InvalidInputError(f"cannot write {path}: {folder} is a file, not a folder")
    name_max = os.pathconf(folder, "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    if len(os.fsencode(path.name)) + TMP_NAME_EXTRA > name_max:
        raise InvalidInputError(f"cannot write {path}: the file name is too long")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".gambar-probe-")
    except OSError as exc:
        raise InvalidInputError(
            f"cannot write {path}: {folder} does not accept new files ({exc.strerror})") from None
    os.close(fd)
    os.unlink(probe)


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, overwrite: bool = True
) -> None:
    """Write `data` to `path` via a synced temp file in the same directory and a rename."""
    path = Path(path)
    if not overwrite and path.exists():
        raise _refuse_existing(path)
    if path.is_dir():  # os.replace would fail only after the data was written
        raise InvalidInputError(f"{path} is a folder; refusing to replace it with a file")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _file_mode())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_no_clobber(tmp, path)
        fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _link_no_clobber(tmp: str, path: Path) -> None:
    """Publish `tmp` as `path` only if `path` does not exist, without a check-then-write race."""
    try:
        os.link(tmp, path)  # fails atomically with EEXIST, unlike os.replace
    except FileExistsError:
        raise _refuse_existing(path) from None
    except OSError:
        # Filesystems without hard links (some FUSE/SMB mounts): best-effort check instead.
        if path.exists():
            raise _refuse_existing(path) from None
        os.replace(tmp, path)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, overwrite: bool = True, encoding: str = "utf-8"
) -> None:
    """Text version of `atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode(encoding), overwrite=overwrite)


def _old_dir(dst: Path) -> Path:
    return dst.with_name(f".{dst.name}.old")


def replace_dir(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Move the finished directory `src` to `dst`, keeping the old `dst` until `src` is in place.

    POSIX cannot rename a directory over a non-empty one, so the old one is first moved aside to
    `.<name>.old`; a crash between the two renames leaves it there, where `current_dir` finds it.
    """
    src, dst = Path(src), Path(dst)
    old = _old_dir(dst)
    if dst.exists():
        if old.exists():  # leftover of a swap that finished but crashed before cleaning up
            shutil.rmtree(old)
        os.rename(dst, old)
    os.rename(src, dst)
    fsync_dir(dst.parent)
    if old.exists():
        shutil.rmtree(old)


def current_dir(dst: str | os.PathLike[str]) -> Path | None:
    """The directory a reader should use: `dst`, or the old copy a crashed `replace_dir` left."""
    dst = Path(dst)
    for candidate in (dst, _old_dir(dst)):
        if candidate.is_dir():
            return candidate
    return None

"""Atomic file writes: a temporary file in the same folder, then a rename.

A replaced file keeps its permissions; a new one gets those the umask gives (the
temporary file's private 0600 is not left behind). Temporary names are short enough
beside any legal file name and carry the writer's process id, so that what a killed
run left (a temporary file, a half-built or an old folder) is removed by the next
write to the same destination, and nothing a live process is writing.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import os
import re
import shutil
import stat
import tempfile
from glob import escape as glob_escape
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


def _mode(path: Path, default: int) -> int:
    """The permissions to give what replaces ``path``: its own, or ``default`` less the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return default & ~_UMASK


def _prefix(path: Path) -> str:
    """A temporary name's start: the destination's name, cut so the whole stays under 255 bytes."""
    return f".{os.fsencode(path.name)[:100].decode(errors='ignore')}."


STALE = re.compile(r"(?:(\d+)\.[^.]+\.tmp(?:\.\w+)?|tmp-(\d+)-[^.]+|old-(\d+))")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale(path: Path) -> None:
    """Remove what dead processes left beside ``path`` (their temporary files and folders)."""
    prefix = _prefix(path)
    for stale in path.parent.glob(f"{glob_escape(prefix)}*"):
        match = STALE.fullmatch(stale.name[len(prefix):])
        if match is None or _alive(int(next(g for g in match.groups() if g))):
            continue
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()


def scratch_path(path: str | Path, suffix: str = "") -> Path:
    """A name beside ``path`` for this process's own scratch file (the caller removes it),
    once what dead processes left there under the same name is removed: a process killed
    outright (SIGKILL, or SIGTERM, which Python leaves to the system) runs no ``finally``.
    ``suffix`` ends the name (``.npy``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    return path.parent / f"{_prefix(path)}{os.getpid()}.scratch.tmp{suffix}"


def _device_or_pipe(path: Path) -> bool:
    """Whether ``path`` is there and neither a plain file nor a folder (a device, a pipe, a
    socket): what ``atomic_path`` writes in place and ``atomic_dir`` refuses."""
    return path.exists() and not (path.is_file() or path.is_dir())


@contextlib.contextmanager
def _named(path: Path):
    """An ``OSError`` raised making the temporary file or folder beside ``path`` names ``path``,
    the destination asked for, rather than the temporary name no one chose."""
    try:
        yield
    except OSError as exc:
        raise type(exc)(exc.errno, exc.strerror, str(path)) from exc


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ""):
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    ``suffix`` ends the temporary name, for writers that insist on an extension
    (Keras' ``.keras``, LiteRT's ``.tflite``). On an exception the temporary file is
    removed and ``path`` is left untouched.

    A symbolic link stays: the file it points to is the one replaced. A device or a pipe
    (``/dev/null``, ``/dev/stdout``, a FIFO) is written in place, as a shell's ``>`` would:
    renaming over it would put a plain file where the device was (as root, ``-o /dev/null``
    replaced the system's ``/dev/null``).
    """
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    if _device_or_pipe(path):
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    with _named(path):
        fd, tmp = tempfile.mkstemp(prefix=f"{_prefix(path)}{os.getpid()}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _mode(path, 0o666))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


@functools.cache
def _renameat2():
    """glibc's ``renameat2`` (Linux 3.15+), or None where there is none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def exchange(a: Path, b: Path) -> bool:
    """Swap what ``a`` and ``b`` name in one atomic step (``RENAME_EXCHANGE``); False where the
    platform or file system cannot, and nothing changed."""
    function = _renameat2()
    if function is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    return function(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


@contextlib.contextmanager
def atomic_dir(path: str | Path):
    """Yield a temporary folder beside ``path``; on success it replaces ``path``.

    An existing ``path`` is kept until the new folder is complete, then exchanged with it in
    one atomic step where the platform allows (Linux), so ``path`` is never missing; an
    interrupted run leaves only a ``.tmp-`` folder that nothing trusts (and the next run
    removes). A device or a pipe at ``path`` is refused (``FileExistsError``) before
    anything is written: the exchange would put the folder in its place.
    """
    path = Path(path)
    if _device_or_pipe(path):
        raise FileExistsError(errno.EEXIST, "a device or a pipe, not a folder to write into", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    with _named(path):
        tmp = Path(tempfile.mkdtemp(prefix=f"{_prefix(path)}tmp-{os.getpid()}-", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.chmod(tmp, _mode(path, 0o777))
    if path.exists() and exchange(tmp, path):  # one atomic step: ``path`` is never missing
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)  # the old content, now under the temporary name
        else:
            tmp.unlink(missing_ok=True)
        return
    old = None
    if path.exists():  # where the platform cannot exchange: two renames
        old = path.parent / f"{_prefix(path)}old-{os.getpid()}"
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

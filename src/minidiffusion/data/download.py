"""Where datasets live, and fetching the missing ones from their standard mirrors.

Every download is verified against the checksum its publisher gives (SHA-256 where we know it, MD5 where that is
all the source publishes) and lands under its final name only once verified, so an interrupted or damaged
transfer never looks like a dataset. ``MINIDIFFUSION_OFFLINE=1`` turns downloading off (the tests set it);
``MINIDIFFUSION_DATA`` moves the cache (default ``~/.cache/minidiffusion``).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

log = logging.getLogger("minidiffusion")

# Seconds a connection attempt or a stalled read may take. Short on purpose: a machine without a network should
# hear "put the files there" quickly rather than wait on a mirror that will never answer.
TIMEOUT_S = 15.0


class DownloadFailed(Exception):
    """The network or the mirror let us down (as opposed to a checksum mismatch, which is a UserError)."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its name on disk, where to fetch it, and the checksum its publisher gives."""
    name: str
    url: str
    sha256: str = ""
    md5: str = ""


def cache_dir() -> Path:
    """The base folder for downloaded datasets: ``$MINIDIFFUSION_DATA`` or ``~/.cache/minidiffusion``."""
    base = os.environ.get("MINIDIFFUSION_DATA", "").strip()
    return Path(base).expanduser() if base else Path.home() / ".cache" / "minidiffusion"


def downloads_disabled() -> bool:
    return os.environ.get("MINIDIFFUSION_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def missing_files_message(dataset: str, directory: Path, names: Sequence[str], why: str = "") -> str:
    """The one-line error for a dataset whose files are not where we looked."""
    reason = f" ({why})" if why else ""
    return (f"{dataset}: {', '.join(names)} not found in {directory}{reason}; put the files there, or point "
            f"data.root at a folder that has them (--set data.root=DIR)")


def ensure_files(dataset: str, directory: Path, files: Sequence[RemoteFile]) -> None:
    """Make sure every file exists in ``directory``, downloading the missing ones when allowed."""
    missing = [f for f in files if not (directory / f.name).is_file()]
    if not missing:
        return
    names = [f.name for f in missing]
    if downloads_disabled():
        raise UserError(missing_files_message(dataset, directory, names, "downloads are off: MINIDIFFUSION_OFFLINE"))
    for f in missing:
        try:
            download(f.url, directory / f.name, sha256=f.sha256, md5=f.md5)
        except DownloadFailed as e:
            raise UserError(missing_files_message(dataset, directory, names, f"download failed: {e}")) from None


def download(url: str, dest: Path, *, sha256: str = "", md5: str = "", timeout: float = TIMEOUT_S) -> None:
    """Fetch ``url`` to ``dest`` through a temporary file in the same folder, verify it, then rename it into place.

    Raises :class:`DownloadFailed` when the transfer fails and :class:`UserError` when the checksum does not match.
    """
    if downloads_disabled():
        raise DownloadFailed("downloads are off: MINIDIFFUSION_OFFLINE")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {dest.parent} to download {dest.name} into: {e}") from None
    algo, expected = ("sha256", sha256) if sha256 else ("md5", md5)
    digest = hashlib.new(algo)
    log.info("downloading %s -> %s", url, dest)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    while chunk := response.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
            except (OSError, http.client.HTTPException) as e:
                # URLError (DNS, refused connection, HTTP 404), timeouts and a full disk are all OSErrors; to the
                # caller they mean the same thing: this download did not happen.
                raise DownloadFailed(f"{url}: {getattr(e, 'reason', e)}") from None
        if expected and digest.hexdigest() != expected.lower():
            raise UserError(f"downloaded {url} but its {algo} is {digest.hexdigest()}, expected {expected}: the "
                            f"transfer was damaged or the mirror changed; try again, or put a good copy at {dest}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def extract_tar(archive: Path, into: Path) -> None:
    """Extract a tar archive into ``into``, refusing members that would land outside it or are not plain files.

    Archives from the internet may carry ``../`` paths, absolute paths, links or device files; none of these
    belong in a dataset, so any of them is an error rather than something to skip quietly.
    """
    into = into.resolve()
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for m in members:
                target = (into / m.name).resolve()
                if not (m.isfile() or m.isdir()) or not target.is_relative_to(into):
                    raise UserError(f"{archive}: refusing to extract {m.name!r} (outside the target folder or "
                                    f"not a regular file); delete the archive and download it again")
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: the standard library's own safety net too
                tar.extractall(into, members=members, filter="data")
            else:
                tar.extractall(into, members=members)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise UserError(f"{archive} is corrupt ({e}); delete it and download it again") from None


def fetch_archive(dataset: str, archive: RemoteFile, directory: Path, expected: Sequence[str]) -> None:
    """Download ``archive`` into ``directory``, extract it there and delete it (when any of ``expected`` is missing).

    Extraction goes to a temporary folder first and files are moved into place one by one, so a half-extracted
    archive never passes for a dataset and files already present are kept.
    """
    missing = [name for name in expected if not (directory / name).exists()]
    if not missing:
        return
    if downloads_disabled():
        raise UserError(missing_files_message(dataset, directory, missing, "downloads are off: MINIDIFFUSION_OFFLINE"))
    tar_path = directory / archive.name
    if not tar_path.is_file():
        try:
            download(archive.url, tar_path, sha256=archive.sha256, md5=archive.md5)
        except DownloadFailed as e:
            raise UserError(missing_files_message(dataset, directory, missing, f"download failed: {e}")) from None
    staging = Path(tempfile.mkdtemp(dir=directory, prefix=f".{archive.name}."))
    try:
        extract_tar(tar_path, staging)
        for extracted in sorted(staging.rglob("*")):
            if extracted.is_file():
                target = directory / extracted.relative_to(staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    os.replace(extracted, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    tar_path.unlink(missing_ok=True)

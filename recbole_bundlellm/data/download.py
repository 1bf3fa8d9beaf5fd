"""Fetch the raw SIGIR 2022 bundle files from upstream GitHub and verify them.

Each of the 33 files (11 per domain) is checked against the size and git blob SHA-1 recorded
in ``upstream_manifest.json`` (``BundleRec/bundle_recommendation`` at a fixed commit).

The AICL split of electronic (``electronic/aicl_split/``) is *not* upstream raw data: it was
derived from the AICL code's preprocessed files (``hoangpanda/DICL1``) and cannot be
downloaded here. Without it, ``prepare_domain(..., "electronic")`` raises a ``DataError``
saying so; clothing and food need only the downloaded files.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from recbole_bundlellm.data.raw import DOMAINS, DataError, check_domain
from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.fileio import atomic_write_bytes

logger = logging.getLogger(__name__)

MANIFEST_PATH = Path(__file__).with_name("upstream_manifest.json")
DEFAULT_BASE_URL = (
    "https://raw.githubusercontent.com/BundleRec/bundle_recommendation/"
    "087da2e2b4d8738ef23f3f6f2005505e8685edde/dataset"
)
BASE_URL_ENV = "BUNDLELLM_DATA_URL"
# Seconds before the first retry; doubled after each failure (tests set it to 0).
BACKOFF_S = 1.0


class DownloadError(BundleLLMError, OSError):
    """A file could not be fetched after all retries."""


@lru_cache(maxsize=1)
def load_manifest() -> dict:
    """The upstream manifest: ``files`` maps ``<domain>/<file>`` to ``size`` and ``git_blob_sha1``."""
    return json.loads(MANIFEST_PATH.read_text(encoding="utf-8"))


def git_blob_sha1(content: bytes) -> str:
    """The git blob hash of ``content`` (what ``git hash-object`` prints)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _mismatch(content: bytes, expected: dict) -> str | None:
    if len(content) != expected["size"]:
        return f"size {len(content)} != expected {expected['size']}"
    digest = git_blob_sha1(content)
    if digest != expected["git_blob_sha1"]:
        return f"git blob SHA-1 {digest} != expected {expected['git_blob_sha1']}"
    return None


def _is_verified(path: Path, expected: dict) -> bool:
    try:
        if path.stat().st_size != expected["size"]:
            return False
        return _mismatch(path.read_bytes(), expected) is None
    except OSError:
        return False


def _retryable(err: Exception) -> bool:
    if isinstance(err, urllib.error.HTTPError):
        return err.code >= 500 or err.code in (408, 429)
    return isinstance(err, (urllib.error.URLError, OSError, http.client.HTTPException))


def _fetch(url: str, timeout: float, retries: int) -> bytes:
    delay = BACKOFF_S
    for attempt in range(retries + 1):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.read()
        except Exception as err:  # noqa: BLE001  (classified just below)
            if not _retryable(err) or attempt == retries:
                raise DownloadError(f"could not fetch {url}: {err}") from err
            logger.warning("fetching %s failed (%s); retry %d/%d", url, err, attempt + 1, retries)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def download(
    dest: Path,
    domains: Sequence[str] = DOMAINS,
    *,
    base_url: str | None = None,
    timeout: float = 60.0,
    retries: int = 3,
) -> list[Path]:
    """Download the raw files of ``domains`` into ``dest/<domain>/`` and verify them.

    ``base_url`` defaults to ``$BUNDLELLM_DATA_URL`` or the pinned upstream commit; files are
    fetched from ``{base_url}/{domain}/{file}``. Files already present with the right size and
    hash are skipped; a present file that does not match is deleted and fetched again.
    Network errors (and HTTP 5xx/408/429) are retried ``retries`` times with exponential
    backoff, then raise :class:`DownloadError`. A size or hash mismatch raises
    :class:`DataError` and leaves nothing of that file on disk (files are written to a temp
    file and renamed into place only after verification).

    Returns the paths of all the verified files of ``domains`` (downloaded now or already
    present). The electronic AICL split (``aicl_split/``) is not upstream data and is not
    downloaded.
    """
    for domain in domains:
        check_domain(domain)
    base = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
    files = load_manifest()["files"]
    verified: list[Path] = []
    for domain in domains:
        for key in sorted(k for k in files if k.split("/", 1)[0] == domain):
            expected = files[key]
            path = Path(dest) / key
            verified.append(path)
            if _is_verified(path, expected):
                continue
            if path.exists():
                # Known bad (partial or edited): remove it so a failed fetch leaves no bad file.
                logger.warning("%s does not match the manifest; downloading it again", path)
                path.unlink()
            url = f"{base}/{key}"
            content = _fetch(url, timeout, retries)
            problem = _mismatch(content, expected)
            if problem is not None:
                raise DataError(
                    f"{url}: downloaded file does not match the manifest ({problem}); "
                    f"nothing written to {path}"
                )
            atomic_write_bytes(path, content)
            logger.info("downloaded %s", path)
    return verified

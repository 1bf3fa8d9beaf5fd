"""download(): fetch raw files over HTTP and verify them against the upstream manifest.

Runs against a real HTTP server on 127.0.0.1 serving copies of the real raw files.
"""

from __future__ import annotations

import functools
import http.server
import importlib
import shutil
import threading
from collections import Counter
from pathlib import Path

import pytest

from recbole_bundlellm.data import DOMAINS, DataError, download
from recbole_bundlellm.data.raw import RAW_FILES

dl = importlib.import_module("recbole_bundlellm.data.download")


class _Handler(http.server.SimpleHTTPRequestHandler):
    hits: Counter  # path -> requests (set per server)
    fail_first: int = 0  # answer 503 to the first N requests of each path

    def do_GET(self):  # noqa: N802  (http.server naming)
        self.hits[self.path] += 1
        if self.hits[self.path] <= self.fail_first:
            self.send_error(503, "try again")
            return
        super().do_GET()

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def serve(tmp_path):
    """serve(root, fail_first=0) -> (base_url, hits); servers stop at teardown."""
    servers = []

    def start(root: Path, fail_first: int = 0):
        hits: Counter = Counter()
        handler = type("H", (_Handler,), {"hits": hits, "fail_first": fail_first})
        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
        )
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", hits

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def food_copy(raw_data_root, tmp_path) -> Path:
    """A served folder holding a copy of the real food files (the smallest domain)."""
    root = tmp_path / "served"
    shutil.copytree(raw_data_root / "food", root / "food")
    return root


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch):
    monkeypatch.setattr(dl, "BACKOFF_S", 0.0)


def test_manifest_covers_all_33_files():
    manifest = dl.load_manifest()
    assert manifest["commit"] == "087da2e2b4d8738ef23f3f6f2005505e8685edde"
    assert set(manifest["files"]) == {f"{d}/{f}" for d in DOMAINS for f in RAW_FILES}
    assert len(manifest["files"]) == 33
    assert not any("aicl" in key for key in manifest["files"])
    assert "087da2e2b4d8738ef23f3f6f2005505e8685edde" in dl.DEFAULT_BASE_URL


def test_manifest_matches_local_raw_files(raw_data_root):
    for key, expected in dl.load_manifest()["files"].items():
        content = (raw_data_root / key).read_bytes()
        assert len(content) == expected["size"], key
        assert dl.git_blob_sha1(content) == expected["git_blob_sha1"], key


def test_git_blob_sha1():
    # git hash-object of an empty file and of "hello\n"
    assert dl.git_blob_sha1(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert dl.git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_download_then_nothing_to_do(serve, food_copy, tmp_path):
    base, hits = serve(food_copy)
    dest = tmp_path / "raw"
    written = download(dest, ["food"], base_url=base)
    assert sorted(p.name for p in written) == sorted(RAW_FILES)
    for name in RAW_FILES:
        assert (dest / "food" / name).read_bytes() == (food_copy / "food" / name).read_bytes()
    assert sum(hits.values()) == 11
    assert download(dest, ["food"], base_url=base) == written
    assert sum(hits.values()) == 11  # the second call fetched nothing
    assert not list(dest.rglob("*.part"))


def test_corrupted_download_is_rejected(serve, food_copy, tmp_path):
    target = food_copy / "food" / "session_bundle.csv"
    data = bytearray(target.read_bytes())
    data[-2] = ord("9") if data[-2] != ord("9") else ord("8")  # same size, different content
    original = target.read_bytes()
    target.write_bytes(bytes(data))
    base, _ = serve(food_copy)
    dest = tmp_path / "raw"
    with pytest.raises(DataError, match=r"session_bundle\.csv.*git blob SHA-1"):
        download(dest, ["food"], base_url=base)
    assert not (dest / "food" / "session_bundle.csv").exists()
    assert not list(dest.rglob("*.part"))
    target.write_bytes(original)
    truncated = food_copy / "food" / "session_item.csv"
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(DataError, match=r"session_item\.csv.*size 100"):
        download(tmp_path / "raw2", ["food"], base_url=base)
    assert not (tmp_path / "raw2" / "food" / "session_item.csv").exists()


def test_local_corruption_is_repaired(serve, food_copy, tmp_path):
    base, hits = serve(food_copy)
    dest = tmp_path / "raw"
    download(dest, ["food"], base_url=base)
    (dest / "food" / "bundle_item.csv").write_text("bundle ID,item ID\n")
    download(dest, ["food"], base_url=base)
    assert hits["/food/bundle_item.csv"] == 2 and sum(hits.values()) == 12
    assert (dest / "food" / "bundle_item.csv").read_bytes() == (
        food_copy / "food" / "bundle_item.csv"
    ).read_bytes()
    # A bad local file whose fresh download is also bad is removed, not kept.
    (dest / "food" / "bundle_item.csv").write_text("bundle ID,item ID\n")
    (food_copy / "food" / "bundle_item.csv").write_text("bundle ID,item ID\n1,2\n")
    with pytest.raises(DataError, match="bundle_item"):
        download(dest, ["food"], base_url=base)
    assert not (dest / "food" / "bundle_item.csv").exists()


def test_retries_transient_errors(serve, food_copy, tmp_path):
    base, hits = serve(food_copy, fail_first=1)
    written = download(tmp_path / "raw", ["food"], base_url=base, retries=2)
    assert len(written) == 11 and sum(hits.values()) == 22
    base2, _ = serve(food_copy, fail_first=5)
    with pytest.raises(dl.DownloadError, match="503"):
        download(tmp_path / "raw2", ["food"], base_url=base2, retries=1)
    assert not (tmp_path / "raw2" / "food").exists() or not any((tmp_path / "raw2" / "food").iterdir())


def test_missing_file_is_not_retried(serve, tmp_path):
    (tmp_path / "empty").mkdir()
    base, hits = serve(tmp_path / "empty")
    with pytest.raises(dl.DownloadError, match="404"):
        download(tmp_path / "raw", ["food"], base_url=base, retries=3)
    assert sum(hits.values()) == 1


def test_base_url_from_environment(serve, food_copy, tmp_path, monkeypatch):
    base, hits = serve(food_copy)
    monkeypatch.setenv("BUNDLELLM_DATA_URL", base + "/")
    assert len(download(tmp_path / "raw", ["food"])) == 11
    assert sum(hits.values()) == 11


def test_unknown_domain(tmp_path):
    with pytest.raises(DataError, match="electronic, clothing, food"):
        download(tmp_path, ["books"])

"""Raw-file validation says what is actually wrong, where: file, line (and byte for encodings)."""

from __future__ import annotations

import codecs
import shutil
from pathlib import Path

import pytest

from recbole_bundlellm.data import DataError, prepare_domain
from recbole_bundlellm.data.raw import read_domain

TINY = Path(__file__).resolve().parent / "fixtures" / "tiny_raw"


@pytest.fixture
def raw(tmp_path) -> Path:
    """A writable copy of the tiny raw root; its domain is ``clothing``."""
    shutil.copytree(TINY, tmp_path / "raw")
    return tmp_path / "raw"


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8", newline="") as f:
        f.write(text)


def lines_of(path: Path) -> int:
    return path.read_bytes().count(b"\n")


# --------------------------------------------------------------------------- cross-file checks


@pytest.mark.parametrize(("row", "message"), [
    # a session pointing at a bundle that does not exist
    ("0,888888", "line {line}: bundle 888888 is not in bundle_item.csv"),
    # an exact duplicate of line 4 ("1,2")
    ("1,2", "line {line} repeats line 4 (session 1, bundle 2)"),
    # a bundle really given to two sessions
    ("2,2", "line {line}: bundle 2 is given to session 2, but line 4 gave it to session 1"),
])
def test_session_bundle_rows_say_what_is_wrong(raw, row, message):
    path = raw / "clothing" / "session_bundle.csv"
    line = lines_of(path) + 1
    append(path, row + "\n")
    with pytest.raises(DataError) as info:
        read_domain(raw, "clothing")
    assert str(info.value) == f"{path}: " + message.format(line=line)


def test_bundle_with_one_item(raw):
    path = raw / "clothing" / "bundle_item.csv"
    path.write_text(path.read_text().replace("0,111\n", "", 1))
    with pytest.raises(DataError) as info:
        read_domain(raw, "clothing")
    assert str(info.value) == f"{path}: line 2: bundle 0 has only this item (101); a bundle needs at least 2"


# --------------------------------------------------------------------------- encodings


def test_invalid_utf8_names_file_line_and_byte(raw):
    path = raw / "clothing" / "item_titles.csv"
    data = path.read_bytes()
    # A long first title pushes the bad byte past the reader's first decoding chunk (8 KiB),
    # so a chunk-relative offset would be wrong.
    data = data.replace(b"Oxford Cotton Dress Shirt", b"Oxford " + b"x" * 10_000, 1)
    data = data.replace(b"Linen Button Down Shirt", b"Linen \xff Shirt", 1)
    path.write_bytes(data)
    offset = data.index(b"\xff")
    line = data.count(b"\n", 0, offset) + 1
    with pytest.raises(DataError) as info:
        prepare_domain(raw, raw.parent / "out", "clothing")
    assert str(info.value) == (
        f"{path}: line {line}: byte {offset}: invalid UTF-8 (0xff: invalid start byte); "
        "save the file as UTF-8"
    )
    assert not (raw.parent / "out").exists()


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
def test_utf16_file_is_named(raw, encoding):
    path = raw / "clothing" / "session_item.csv"
    text = path.read_text(encoding="utf-8")
    path.write_bytes(text.encode(encoding))  # "utf-16" writes a byte-order mark, "utf-16-be" none
    with pytest.raises(DataError, match=r"session_item\.csv: line 1: .*UTF-16.*save the file as UTF-8"):
        read_domain(raw, "clothing")


def test_bom_and_crlf_files_give_the_same_output(raw, tmp_path):
    plain = prepare_domain(TINY, tmp_path / "plain", "clothing", seed=0)
    for path in (raw / "clothing").glob("*.csv"):
        text = path.read_bytes().decode("utf-8").replace("\n", "\r\n")
        path.write_bytes(codecs.BOM_UTF8 + text.encode("utf-8"))
    card = prepare_domain(raw, tmp_path / "bom", "clothing", seed=0)
    assert card["counts"] == plain["counts"]
    for path in (tmp_path / "plain" / "clothing").glob("clothing.*"):
        assert (tmp_path / "bom" / "clothing" / path.name).read_bytes() == path.read_bytes(), path.name


def test_unclosed_quote_names_the_line_where_the_row_starts(raw):
    path = raw / "clothing" / "item_titles.csv"
    line = lines_of(path) + 1
    append(path, '999,"never closed ' + "x" * 140_000 + "\n")  # runs past csv's field limit
    with pytest.raises(DataError) as info:
        read_domain(raw, "clothing")
    assert str(info.value) == f"{path}: line {line}: field larger than field limit (131072)"

"""Reading and validating the raw SIGIR 2022 bundle files of one domain.

The upstream files (``BundleRec/bundle_recommendation``, ``dataset/<domain>/``) are
comma-separated with a header row and RFC-4180 quoting, although the upstream README calls
them tab separated. Every reader here checks the header exactly and reports bad rows with
the file name and the 1-based physical line where the row starts.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from recbole_bundlellm.errors import BundleLLMError

DOMAINS: tuple[str, ...] = ("electronic", "clothing", "food")

# The 11 upstream files of each domain and their exact header rows.
RAW_FILES: dict[str, tuple[str, ...]] = {
    "bundle_intent.csv": ("bundle ID", "intent"),
    "bundle_item.csv": ("bundle ID", "item ID"),
    "item_categories.csv": ("item ID", "categories"),
    "item_idx_mapping.csv": ("item ID", "source ID"),
    "item_titles.csv": ("item ID", "titles"),
    "session_bundle.csv": ("session ID", "bundle ID"),
    "session_item.csv": ("session ID", "item ID"),
    "user_bundle.csv": ("user ID", "bundle ID", "timestamp"),
    "user_idx_mapping.csv": ("user ID", "source ID"),
    "user_item.csv": ("user ID", "item ID", "timestamp"),
    "user_session.csv": ("user ID", "session ID", "timestamp"),
}

# The derived AICL files (electronic only, not upstream); see shared/data/bundle/SOURCE.md.
AICL_DOMAIN = "electronic"  # the one domain whose split and full titles come from AICL
AICL_DIR = "aicl_split"
AICL_FILES: dict[str, tuple[str, ...]] = {
    "sessions.csv": ("aicl_session_id", "bundlerec_session_id", "split", "item_asins", "session_text"),
    "bundles_dedup.csv": ("aicl_session_id", "intent", "item_asins"),
    "item_titles_full.csv": ("asin", "title"),
}

# Raw files that preparation reads (the user_* files are not needed for bundle generation).
USED_FILES: tuple[str, ...] = (
    "session_item.csv",
    "session_bundle.csv",
    "bundle_item.csv",
    "bundle_intent.csv",
    "item_titles.csv",
    "item_categories.csv",
)


class DataError(BundleLLMError, ValueError):
    """Raw data is missing or malformed (the message names the file and line where it can), or the
    output folder cannot be written safely."""


def check_domain(domain: str) -> str:
    """Return ``domain`` or raise :class:`DataError` listing the known domains."""
    if domain not in DOMAINS:
        raise DataError(f"unknown domain {domain!r}; expected one of {', '.join(DOMAINS)}")
    return domain


def iter_rows(path: Path, header: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line, row)`` for each data row of a CSV file after checking its header.

    ``line`` is the 1-based physical line where the row starts (quoted fields may span lines).
    A UTF-8 byte-order mark and CRLF line ends are accepted; bytes that are not UTF-8 raise a
    :class:`DataError` naming the file, line and byte offset.
    """
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        start = 1
        try:
            _check_header(path, header, next(reader, None))
            start = reader.line_num + 1
            for row in reader:
                if row and len(row) != len(header):
                    raise DataError(
                        f"{path}: line {start}: expected {len(header)} columns, got {len(row)}"
                    )
                if row:
                    yield start, row
                start = reader.line_num + 1
        except UnicodeDecodeError:
            # The decoder works on 8 KiB chunks, so its offsets are not the file's: find the
            # first bad byte again in the whole file.
            raise _encoding_error(path) from None
        except csv.Error as exc:  # e.g. an unclosed quote that swallows the rest of the file
            raise DataError(f"{path}: line {start}: {exc}") from None


def _check_header(path: Path, header: tuple[str, ...], got: list[str] | None) -> None:
    if got is not None and tuple(got) == header:
        return
    if got is not None and "\x00" in "".join(got):
        raise DataError(f"{path}: line 1: {_UTF16_ADVICE} (it has NUL bytes)")
    shown = ",".join(got) if got is not None else "<empty file>"
    raise DataError(f"{path}: line 1: expected header {','.join(header)!r}, got {shown!r}")


_UTF16_ADVICE = "the file looks UTF-16 encoded; save the file as UTF-8"


def _encoding_error(path: Path) -> DataError:
    """A :class:`DataError` naming the line and byte offset of the first non-UTF-8 byte of ``path``."""
    data = path.read_bytes()
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return DataError(f"{path}: line 1: {_UTF16_ADVICE} (it starts with a UTF-16 byte-order mark)")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if b"\x00" in data[: exc.start]:  # UTF-16 without a byte-order mark
            return DataError(f"{path}: line 1: {_UTF16_ADVICE} (it has NUL bytes)")
        line = data.count(b"\n", 0, exc.start) + 1
        bad = " ".join(f"0x{b:02x}" for b in data[exc.start : exc.end])
        return DataError(
            f"{path}: line {line}: byte {exc.start}: invalid UTF-8 ({bad}: {exc.reason}); "
            "save the file as UTF-8"
        )
    return DataError(f"{path}: not valid UTF-8; save the file as UTF-8")  # changed while being read


def parse_int(value: str, path: Path, line: int, column: str) -> int:
    """``int(value)`` or a :class:`DataError` naming the file, line and column."""
    try:
        return int(value)
    except ValueError:
        raise DataError(f"{path}: line {line}: {column} {value!r} is not an integer") from None


@dataclass
class RawDomain:
    """The parsed raw files of one domain (raw integer ids, file order preserved)."""

    domain: str
    session_items: dict[int, list[int]] = field(default_factory=dict)
    session_bundles: dict[int, list[int]] = field(default_factory=dict)
    bundle_items: dict[int, list[int]] = field(default_factory=dict)
    bundle_session: dict[int, int] = field(default_factory=dict)
    intents: dict[int, str] = field(default_factory=dict)
    titles: dict[int, str] = field(default_factory=dict)
    categories: dict[int, str] = field(default_factory=dict)
    # 1-based line of each category string, so a parse error can point at it.
    category_lines: dict[int, int] = field(default_factory=dict)


def _read_pairs(path: Path, int_second: bool = True) -> Iterator[tuple[int, int | str, int]]:
    header = RAW_FILES[path.name]
    for line, (a, b) in iter_rows(path, header):
        first = parse_int(a, path, line, header[0])
        second: int | str = parse_int(b, path, line, header[1]) if int_second else b
        yield first, second, line


def _read_session_items(path: Path, raw: RawDomain) -> None:
    seen: set[tuple[int, int]] = set()
    for session, item, line in _read_pairs(path):
        if (session, item) in seen:
            raise DataError(f"{path}: line {line}: item {item} repeated in session {session}")
        seen.add((session, item))
        raw.session_items.setdefault(session, []).append(item)


def _read_session_bundles(path: Path, raw: RawDomain) -> dict[int, int]:
    """Fill ``raw.bundle_session``/``session_bundles``; returns each bundle's line in ``path``."""
    lines: dict[int, int] = {}
    for session, bundle, line in _read_pairs(path):
        if session not in raw.session_items:
            raise DataError(f"{path}: line {line}: session {session} is not in session_item.csv")
        if bundle in lines:
            owner = raw.bundle_session[bundle]
            raise _repeated_bundle_error(path, line, lines[bundle], session, bundle, owner)
        lines[bundle] = line
        raw.bundle_session[bundle] = session
        raw.session_bundles.setdefault(session, []).append(bundle)
    return lines


def _repeated_bundle_error(
    path: Path, line: int, first: int, session: int, bundle: int, owner: int
) -> DataError:
    # A repeated row is an error, not dropped with a warning: the upstream files hold none, and
    # session_item.csv and bundle_item.csv treat repeats as errors too, so a repeat means the
    # file was damaged or edited (say, rows pasted twice) and the user should look at it.
    if owner == session:
        return DataError(f"{path}: line {line} repeats line {first} (session {session}, bundle {bundle})")
    return DataError(
        f"{path}: line {line}: bundle {bundle} is given to session {session}, "
        f"but line {first} gave it to session {owner}"
    )


def _read_bundle_items(path: Path, raw: RawDomain) -> dict[int, int]:
    """Fill ``raw.bundle_items``; returns the line of each bundle's first item in ``path``."""
    members = {s: set(items) for s, items in raw.session_items.items()}
    lines: dict[int, int] = {}
    for bundle, item, line in _read_pairs(path):
        session = raw.bundle_session.get(bundle)
        if session is None:
            raise DataError(f"{path}: line {line}: bundle {bundle} is not in session_bundle.csv")
        if item not in members[session]:
            raise DataError(
                f"{path}: line {line}: item {item} of bundle {bundle} is not in its session {session}"
            )
        items = raw.bundle_items.setdefault(bundle, [])
        if item in items:
            raise DataError(f"{path}: line {line}: item {item} repeated in bundle {bundle}")
        items.append(item)
        lines.setdefault(bundle, line)
    return lines


def _check_bundle_sizes(
    folder: Path, raw: RawDomain, bundle_lines: dict[int, int], item_lines: dict[int, int]
) -> None:
    """Every bundle of session_bundle.csv has at least 2 items in bundle_item.csv."""
    for bundle, line in bundle_lines.items():
        items = raw.bundle_items.get(bundle, [])
        if not items:
            raise DataError(
                f"{folder / 'session_bundle.csv'}: line {line}: bundle {bundle} is not in bundle_item.csv"
            )
        if len(items) < 2:
            raise DataError(
                f"{folder / 'bundle_item.csv'}: line {item_lines[bundle]}: bundle {bundle} has only this "
                f"item ({items[0]}); a bundle needs at least 2"
            )


def _read_text_column(path: Path, target: dict[int, str], lines: dict[int, int] | None = None) -> None:
    for key, text, line in _read_pairs(path, int_second=False):
        if key in target:
            raise DataError(f"{path}: line {line}: id {key} appears twice")
        target[key] = str(text)
        if lines is not None:
            lines[key] = line


def read_domain(raw_root: Path, domain: str) -> RawDomain:
    """Read and cross-check the raw files of ``domain`` under ``raw_root/<domain>/``."""
    check_domain(domain)
    folder = Path(raw_root) / domain
    if not folder.is_dir():
        raise DataError(f"{folder}: raw data folder not found (expected the upstream files here)")
    for name in USED_FILES:
        if not (folder / name).is_file():
            raise DataError(f"{folder / name}: file not found")
    raw = RawDomain(domain=domain)
    _read_session_items(folder / "session_item.csv", raw)
    bundle_lines = _read_session_bundles(folder / "session_bundle.csv", raw)
    item_lines = _read_bundle_items(folder / "bundle_item.csv", raw)
    _check_bundle_sizes(folder, raw, bundle_lines, item_lines)
    _read_text_column(folder / "bundle_intent.csv", raw.intents)
    _read_text_column(folder / "item_titles.csv", raw.titles)
    _read_text_column(folder / "item_categories.csv", raw.categories, raw.category_lines)
    return raw


def read_item_asins(raw_root: Path, domain: str) -> dict[int, str]:
    """Internal item id -> Amazon ASIN from ``item_idx_mapping.csv``."""
    path = Path(raw_root) / domain / "item_idx_mapping.csv"
    out: dict[int, str] = {}
    _read_text_column(path, out)
    return out


@dataclass(frozen=True)
class AiclSession:
    """One row of ``aicl_split/sessions.csv``."""

    aicl_id: int
    session_id: int
    split: str
    asins: tuple[str, ...]


@dataclass
class AiclSplit:
    """The derived AICL electronic split (see SOURCE.md): sessions, full titles, GT bundles."""

    sessions: list[AiclSession]
    titles: dict[str, str]
    bundles: dict[int, list[tuple[str, tuple[str, ...]]]]  # aicl id -> [(intent, asins)]


#: The session splits, in order (the AICL split's and every prepared dataset's).
SPLITS = ("train", "valid", "test")


def read_aicl_split(raw_root: Path, domain: str = "electronic") -> AiclSplit:
    """Read ``<domain>/aicl_split/``; a missing folder raises a :class:`DataError` saying why."""
    folder = Path(raw_root) / domain / AICL_DIR
    if not folder.is_dir():
        raise DataError(
            f"{folder}: AICL split not found. The {domain} train/valid/test split and its full "
            "item titles come from the AICL preprocessed files (hoangpanda/DICL1, converted to "
            "CSV), which are not part of the upstream raw data and cannot be downloaded with "
            "recbole_bundlellm.data.download; copy the aicl_split/ folder there "
            "(see shared/data/bundle/SOURCE.md)."
        )
    sessions: list[AiclSession] = []
    path = folder / "sessions.csv"
    for line, row in iter_rows(path, AICL_FILES["sessions.csv"]):
        split = row[2]
        if split not in SPLITS:
            raise DataError(f"{path}: line {line}: split {split!r} not in {SPLITS}")
        sessions.append(
            AiclSession(
                aicl_id=parse_int(row[0], path, line, "aicl_session_id"),
                session_id=parse_int(row[1], path, line, "bundlerec_session_id"),
                split=split,
                asins=tuple(a for a in row[3].split(",") if a),
            )
        )
    titles: dict[str, str] = {}
    path = folder / "item_titles_full.csv"
    for _line, (asin, title) in iter_rows(path, AICL_FILES["item_titles_full.csv"]):
        titles[asin] = title
    bundles: dict[int, list[tuple[str, tuple[str, ...]]]] = {}
    path = folder / "bundles_dedup.csv"
    for line, (aid, intent, asins) in iter_rows(path, AICL_FILES["bundles_dedup.csv"]):
        key = parse_int(aid, path, line, "aicl_session_id")
        bundles.setdefault(key, []).append((intent, tuple(a for a in asins.split(",") if a)))
    return AiclSplit(sessions=sessions, titles=titles, bundles=bundles)

"""Manifests as text: the rows of a .csv or .jsonl manifest (image path as written, label),
each row checked (a complete CSV row, a JSON object with a path and a label, printable cells,
each image listed once); ConfigError naming the file and line of the first bad one. Reading
the images they list is edgekd.data.sources.manifest's."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from edgekd.data import checks
from edgekd.schema import ConfigError


def rows(path: Path) -> list[tuple[str, str]]:
    """(image path as written, label) for every row of a .csv or .jsonl manifest; ConfigError
    naming the file (and line) for text that is not UTF-8, a malformed row or a cell holding
    unprintable characters."""
    checks.regular_file(path)
    try:
        data = path.read_bytes()
        text = data.decode("utf-8-sig")  # -sig: Excel's "CSV UTF-8"
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror or exc})"]) from None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError([f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                           "save the manifest as UTF-8"]) from None
    found = _csv_rows(path, text) if path.suffix.lower() == ".csv" else _jsonl_rows(path, text)
    for line, file, label in found:
        checks.printable(path, line, "path", file)
        checks.printable(path, line, "label", label)
    checks.manifest_duplicates(path, found)
    return [(file, label) for _line, file, label in found]


def _csv_rows(path: Path, text: str) -> list[tuple[int, str, str]]:
    """(line, path, label) for each row of a CSV manifest's `text`."""
    reader, rows = csv.DictReader(io.StringIO(text, newline="")), []
    try:
        if (twice := checks.repeated(reader.fieldnames or [])) is not None:
            raise ConfigError([f"{path}:1: the CSV header names column {twice} twice; name "
                               "each column once"])
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ConfigError([f"{path}: the CSV header lacks column(s) "
                               f"{', '.join(sorted(missing))} (has "
                               f"{', '.join(reader.fieldnames or []) or 'none'})"])
        for row in reader:
            # DictReader files cells beyond the header under None, and gives None for each
            # cell a short row lacks: either way the columns no longer say what a cell is.
            cells = len(row) - 1 + len(row[None]) if None in row else \
                sum(cell is not None for cell in row.values())
            if cells != len(reader.fieldnames):
                fix = "quote a cell holding a comma" if cells > len(reader.fieldnames) else \
                    "give every column a cell (empty between commas if need be)"
                raise ConfigError([f"{path}:{reader.line_num}: a row of {cells} "
                                   f"field{'s' if cells != 1 else ''} under a header of "
                                   f"{len(reader.fieldnames)}; {fix}"])
            if not row["path"] or not str(row["label"]).strip():
                raise ConfigError([f"{path}:{reader.line_num}: empty path or label"])
            rows.append((reader.line_num, row["path"], str(row["label"]).strip()))
    except csv.Error as exc:
        raise ConfigError([f"{path}:{reader.line_num}: not valid CSV ({exc})"]) from None
    return rows


def _jsonl_rows(path: Path, text: str) -> list[tuple[int, str, str]]:
    """(line, path, label) for each line of a JSON-lines manifest's `text`."""
    rows = []
    for line, row_text in enumerate(text.split("\n"), 1):
        if not row_text.strip():
            continue
        try:
            row = json.loads(row_text, object_pairs_hook=_unique_keys)
            file, label = row["path"], row["label"]
        except _DuplicateKey as exc:
            raise ConfigError([f"{path}:{line}: the key {exc} appears twice in one object; "
                               "give each key once"]) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError([f"{path}:{line}: expected an object with path and label "
                               f"({type(exc).__name__}: {exc})"]) from None
        # str() would make a label of [2], {}, true or 1.5, and a path of null
        if not isinstance(file, str) or not file or isinstance(label, bool) \
                or not isinstance(label, str | int) or str(label).strip() == "":
            raise ConfigError([f"{path}:{line}: path must be a non-empty string and label a "
                               f"string or an integer (got path {json.dumps(file)}, label "
                               f"{json.dumps(label)})"])
        rows.append((line, file, str(label).strip()))
    return rows


class _DuplicateKey(ValueError):
    """A JSON object naming one key twice (json.loads keeps the last value silently)."""


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    if (twice := checks.repeated([k for k, _v in pairs])) is not None:
        raise _DuplicateKey(json.dumps(twice))
    return dict(pairs)

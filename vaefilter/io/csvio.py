"""Chunked, byte-exact CSV reading and atomic writing.

The ``vaefilter filter`` command splits every input record into exactly one of
two outputs, and the *valid* output must reproduce the input records byte for
byte: header, quoting, number formatting, line endings, encoding, a UTF-8 BOM
and a last line without a newline all survive.  So this module never
re-serialises a record it has read; it keeps each record's raw bytes next to
the parsed fields and writers copy the raw bytes.

Reading streams the file in blocks of :data:`BLOCK_SIZE` bytes and hands out
:class:`CsvChunk` objects of at most ``chunk_rows`` records, so memory stays
flat for multi-gigabyte files.  The hot paths use C-speed primitives
(``bytes.splitlines``, ``bytes.count``, ``bytes.decode`` and pandas' C parser);
Python-level loops run once per record, never once per character.

Record splitting follows RFC 4180: a record ends at ``\n``, ``\r\n`` or
``\r`` outside a quoted field, quotes are ``"`` and ``""`` escapes a quote.
Whether a line break is inside a quoted field is decided by the parity of the
number of quote characters seen so far in the record, which is exact for
RFC 4180 input.  A stray quote in an unquoted field (``5" screen``) is not
RFC 4180; it glues following lines into one record until the parity evens
out.  A glued span that then does not parse into one record of the header's
field count, one still open at the end of the file and one longer than
:data:`MAX_RECORD_BYTES` are split at their line ends instead: the line
holding the stray quote becomes a record of its own, reported as an
unterminated quoted field, and splitting resumes on the next line.  A stray
quote therefore damages only its own line, whatever the file size.

Records that cannot be parsed (wrong field count, undecodable bytes,
unterminated or malformed quoting, blank lines) never abort a run: they are
reported per record in :attr:`CsvChunk.errors` and their bytes are kept.
Only file-level problems (no header, duplicate column names, ...) raise
:class:`CsvFormatError`.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import errno
import glob
import io
import itertools
import os
import secrets
import shutil
import stat
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
import pandas as pd

__all__ = [
    "AtomicOutputs",
    "AtomicWriter",
    "BLOCK_SIZE",
    "CsvChunk",
    "CsvFormatError",
    "CsvReader",
    "MAX_RECORD_BYTES",
    "append_fields",
    "atomic_directories",
    "check_encoding",
    "count_records",
    "format_header",
    "remove_temporaries",
]

#: Bytes read from the source per ``read()`` call.  Large enough that the
#: per-block Python overhead is negligible, small enough to keep memory flat.
#: Read when a reader is created, so tests may monkeypatch it to force
#: records to straddle block boundaries.
BLOCK_SIZE = 1 << 22

#: A quoted record still open after this many bytes is taken to be caused by
#: a stray quote: its first line is reported as an unterminated quoted field
#: and splitting restarts on the next line.  This bounds the memory an open
#: quote can hold (a quoted field may span lines, but not 16 MiB of them).
MAX_RECORD_BYTES = 1 << 24

_QUOTE = b'"'
# Python's csv module refuses fields over 131,072 characters by default; a long
# quoted field (in a column the model may not even use) is still a valid field.
csv.field_size_limit(max(csv.field_size_limit(), (1 << 31) - 1))
_NUL = b"\x00"
_UTF8_BOM = codecs.BOM_UTF8
_TERMINATORS = (b"\r\n", b"\n", b"\r")


class CsvFormatError(ValueError):
    """A problem with the file as a whole, such as a missing header.

    The message names the file, the line and, where relevant, the column.
    Problems with single data records are not raised; they are reported in
    :attr:`CsvChunk.errors`.
    """


@dataclass
class CsvChunk:
    """Consecutive data records of a CSV file, raw and parsed.

    Attributes
    ----------
    records : list of bytes
        Raw bytes of each data record, including its line terminator (the
        last record of a file may have none).  Concatenating the header and
        the records of all chunks reproduces the file exactly.
    line_numbers : numpy.ndarray of int64
        1-based physical line number on which each record starts.
    frame : pandas.DataFrame
        The records that parsed, one row each.  Every column has dtype
        ``object`` and holds the exact field text as ``str`` (an empty field
        is ``''``; nothing is converted to NA).  Columns are the header
        names; the index holds positions into `records`.
    errors : dict of int to str
        Position in `records` -> reason, for records that could not be
        parsed, e.g. ``"line 17: expected 5 fields, found 6"``.
    """

    records: list[bytes]
    line_numbers: np.ndarray
    frame: pd.DataFrame
    errors: dict[int, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# Record splitting
# ---------------------------------------------------------------------------


def _has_odd_quotes(line: bytes) -> bool:
    return line.count(_QUOTE) & 1 == 1


class _RecordSplitter:
    """Cut a byte stream into raw CSV records, block by block.

    Iterating yields lists of complete records; the header comes alone in the
    first list, so that the reader can set :attr:`accept` (the check of a
    glued multi-line record) before any data record is glued.  Lines come
    from ``bytes.splitlines(keepends=True)``, which breaks at exactly the
    three CSV terminators; lines with an odd number of quotes open or close a
    quoted multi-line record, and the lines between such a pair are glued.

    A glued span that `accept` refuses (it does not parse into one record of
    the header's field count), a span still open at the end of the file and
    one that grew past `max_record_bytes` were opened by a stray quote: the
    opening line becomes a record on its own (reported as an unterminated
    quoted field) and the lines after it are split again from scratch.  So a
    stray quote damages only the line it is on, whatever the file size.
    """

    def __init__(self, stream: BinaryIO, block_size: int, max_record_bytes: int):
        self._stream = stream
        self._block_size = block_size
        self._max_record_bytes = max_record_bytes
        #: record bytes -> whether a glued multi-line record is one record
        self.accept = None
        # Complete lines of a quoted record whose closing quote is not yet read.
        self._open: list[bytes] = []
        self._open_bytes = 0
        self._header_done = False

    def __iter__(self) -> Iterator[list[bytes]]:
        tail = b""  # an incomplete last line, completed by the next block
        while True:
            block = self._stream.read(self._block_size)
            if not block:
                break
            buf = tail + block
            lines = buf.splitlines(keepends=True)
            # A line ending in "\r" may be the first half of a "\r\n" cut by
            # the block boundary, so it waits for the next block too.
            tail = b"" if lines[-1].endswith(b"\n") else lines.pop()
            if not self._header_done and lines and not self._open:
                header, lines = _first_record(lines)
                if header is not None:
                    self._header_done = True
                    yield [header]
            records = self._glue(lines, _QUOTE in buf)
            if records:
                self._header_done = True
                yield records
        records = self._glue([tail], _QUOTE in tail) if tail else []
        while self._open:
            # EOF inside a quoted field: a stray quote opened it.
            records.extend(self._give_up_on_open())
        if records:
            yield records

    def _glue(self, lines: list[bytes], has_quotes: bool) -> list[bytes]:
        """Return the complete records in `lines`; keep an open one for later."""
        if not self._open and not has_quotes:
            return lines
        if self._open and not has_quotes:
            self._open.extend(lines)
            self._open_bytes += sum(map(len, lines))
            return self._enforce_record_limit([])
        if self._open:
            lines = self._open + lines
            self._open, self._open_bytes = [], 0
        return self._enforce_record_limit(self._pair_quoted_lines(lines))

    def _pair_quoted_lines(self, lines: list[bytes]) -> list[bytes]:
        """Glue each odd-quote line to the next one and the lines between.

        A glued span that :attr:`accept` refuses is split at its line ends
        instead: its first line becomes a record and the next odd-quote line
        opens the next span.
        """
        odd = [i for i, line in enumerate(lines) if line.count(_QUOTE) & 1]
        if not odd:
            return lines
        records: list[bytes] = []
        done = 0
        k = 0
        while k < len(odd):
            opening = odd[k]
            records.extend(lines[done:opening])
            if k + 1 == len(odd):
                self._open = lines[opening:]
                self._open_bytes = sum(map(len, self._open))
                return records
            closing = odd[k + 1]
            record = b"".join(lines[opening : closing + 1])
            if self.accept is None or self.accept(record):
                records.append(record)
                done, k = closing + 1, k + 2
            else:
                records.append(lines[opening])  # odd quote count: reported as unterminated
                done, k = opening + 1, k + 1
        records.extend(lines[done:])
        return records

    def _give_up_on_open(self) -> list[bytes]:
        """The open record's first line alone, and its other lines split again."""
        first, rest = self._open[0], self._open[1:]
        self._open, self._open_bytes = [], 0
        return [first, *self._pair_quoted_lines(rest)]

    def _enforce_record_limit(self, records: list[bytes]) -> list[bytes]:
        """Give up on an open record that grew past the limit (a stray quote)."""
        while self._open and self._open_bytes > self._max_record_bytes:
            records.extend(self._give_up_on_open())
        return records


def _first_record(lines: list[bytes]) -> tuple[bytes | None, list[bytes]]:
    """(the first record of `lines`, the lines after it); (None, lines) when it is still open."""
    if not lines[0].count(_QUOTE) & 1:
        return lines[0], lines[1:]
    close = next((i for i in range(1, len(lines)) if lines[i].count(_QUOTE) & 1), None)
    if close is None:
        return None, lines
    return b"".join(lines[: close + 1]), lines[close + 1 :]


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


def check_encoding(encoding: str) -> str:
    """The codec name of `encoding`; ValueError naming it when unknown or not ASCII-compatible."""
    try:
        return _decoding_codec(encoding)
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r}") from None


def _appending_codec(encoding: str) -> str:
    """Codec of text appended to records: ``utf-8-sig`` without its BOM (it belongs at the file's start only)."""
    name = codecs.lookup(encoding).name
    return "utf-8" if name == "utf-8-sig" else name


def _decoding_codec(encoding: str) -> str:
    """Return the codec used for record bytes; reject unusable encodings.

    Records are split on bytes, so the encoding must write ASCII line breaks,
    quotes and delimiters as single ASCII bytes (UTF-16 does not).
    ``utf-8-sig`` reads like ``utf-8``: the BOM is handled for the header.
    """
    name = codecs.lookup(encoding).name
    if name == "utf-8-sig":
        name = "utf-8"
    if '\r\n",;|\t'.encode(name) != b'\r\n",;|\t':
        raise ValueError(f"encoding {encoding!r} is not ASCII-compatible; CSV records cannot be split")
    try:  # undecodable bytes are shown replaced in messages; 'idna' has no such mode
        b"\xff".decode(name, errors="replace")
    except UnicodeError:
        raise ValueError(f"encoding {encoding!r} is not a character set for files (it cannot replace an "
                         "undecodable byte); give the file's, e.g. utf-8 or latin-1") from None
    return name


def _record_acceptor(n_columns: int, codec: str, delimiter: str):
    """Whether a glued multi-line record parses into one record of `n_columns` fields.

    Undecodable bytes are replaced for the test (delimiters, quotes and line
    breaks are ASCII in every codec allowed), so that a bad byte is reported
    as such rather than splitting the record.
    """

    def accept(record: bytes) -> bool:
        fields = _parse_quoted(record.decode(codec, errors="replace"), delimiter)
        return not isinstance(fields, str) and len(fields) == n_columns

    return accept


def _strip_terminator(record: bytes) -> tuple[bytes, bytes]:
    """Split `record` into its content and its line terminator (maybe b"")."""
    for terminator in _TERMINATORS:
        if record.endswith(terminator):
            return record[: -len(terminator)], terminator
    return record, b""


def _physical_lines(record: bytes) -> int:
    return len(record.splitlines()) or 1


def _parse_quoted(text: str, delimiter: str) -> list[str] | str:
    """Parse one record's text with the csv module; return fields or a reason."""
    try:
        rows = list(csv.reader([text], delimiter=delimiter, strict=True))
    except csv.Error as exc:
        return f"malformed quoted field ({exc})"
    if len(rows) != 1:
        return "malformed quoted field (line break outside quotes)"
    return rows[0]


class CsvReader:
    """Read a CSV file in chunks, keeping every record's raw bytes.

    Parameters
    ----------
    source : str, os.PathLike or binary file object
        A path, ``"-"`` for standard input, or an open binary file (which the
        reader does not close).
    chunk_rows : int, default 65536
        Largest number of data records per :class:`CsvChunk`.
    encoding : str, default "utf-8"
        Text encoding; must be ASCII-compatible.  A UTF-8 BOM is kept in
        :attr:`header` and stripped from the column names.
    delimiter : str, default ","
        Field separator, one ASCII character.
    name : str, optional
        Name used in messages; defaults to the path, ``"<stdin>"`` or the
        file object's ``name``.
    block_size : int, optional
        Bytes per read; defaults to the current :data:`BLOCK_SIZE`.

    Attributes
    ----------
    header : bytes
        The raw header record including terminator (and BOM if present).
    columns : list of str
        Decoded header names.
    line_terminator : bytes
        The header's terminator (``b"\\n"`` if it has none), for appending to
        a record that has none.

    Raises
    ------
    CsvFormatError
        If the file has no header, the header cannot be decoded or parsed,
        or column names repeat.

    Notes
    -----
    A reader is single-pass: iterate it once.

    Examples
    --------
    >>> import io
    >>> reader = CsvReader(io.BytesIO(b"a,b\\n1,x\\n2\\n"))
    >>> reader.columns
    ['a', 'b']
    >>> chunk = next(iter(reader))
    >>> chunk.frame.to_dict("list"), chunk.errors
    ({'a': ['1'], 'b': ['x']}, {1: 'line 3: expected 2 fields, found 1'})
    """

    def __init__(
        self,
        source,
        chunk_rows: int = 65536,
        encoding: str = "utf-8",
        delimiter: str = ",",
        name: str | None = None,
        block_size: int | None = None,
    ):
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        if len(delimiter) != 1 or delimiter in '"\r\n' or not delimiter.isascii():
            raise ValueError(f"delimiter must be one ASCII character other than a quote or line break, got {delimiter!r}")
        self.encoding = encoding
        self.delimiter = delimiter
        self.chunk_rows = chunk_rows
        self._codec = _decoding_codec(encoding)
        self._stream, self._owns_stream, self.name = _open_source(source, name)
        try:
            self._splitter = _RecordSplitter(
                self._stream,
                block_size if block_size is not None else BLOCK_SIZE,
                MAX_RECORD_BYTES,
            )
            self._batches = iter(self._splitter)
            self._pending = self._read_header()
        except BaseException:
            self.close()
            raise

    # -- header -----------------------------------------------------------

    def _read_header(self) -> list[bytes]:
        """Take the first record as header; return the rest of its batch."""
        batch = next(self._batches, [])
        if not batch:
            raise CsvFormatError(f"{self.name}: line 1: file is empty, expected a header")
        self.header = batch[0]
        self.columns = self._parse_header(self.header)
        self._splitter.accept = _record_acceptor(len(self.columns), self._codec, self.delimiter)
        self.line_terminator = _strip_terminator(self.header)[1] or b"\n"
        self._next_line = 1 + _physical_lines(self.header)
        return batch[1:]

    def _parse_header(self, header: bytes) -> list[str]:
        content, _ = _strip_terminator(header)
        if self._codec == "utf-8" and content.startswith(_UTF8_BOM):
            content = content[len(_UTF8_BOM) :]
        if not content:
            raise CsvFormatError(f"{self.name}: line 1: empty header line, expected column names")
        try:
            text = content.decode(self._codec)
        except UnicodeDecodeError as exc:
            raise CsvFormatError(
                f"{self.name}: line 1: header bytes not valid {self.encoding} at offset {exc.start}"
            ) from None
        if _QUOTE in content:
            if _has_odd_quotes(content):
                raise CsvFormatError(f"{self.name}: line 1: unterminated quoted field in header")
            names = _parse_quoted(text, self.delimiter)
            if isinstance(names, str):
                raise CsvFormatError(f"{self.name}: line 1: {names} in header")
        else:
            names = text.split(self.delimiter)
        _check_unique(names, self.name)
        return names

    # -- chunks -----------------------------------------------------------

    def __iter__(self) -> Iterator[CsvChunk]:
        pending = self._pending
        self._pending = []
        for batch in itertools.chain([[]], self._batches):
            pending.extend(batch)
            # Slice whole chunks off the front; the remainder waits for more.
            while len(pending) >= self.chunk_rows:
                yield self._make_chunk(pending[: self.chunk_rows])
                pending = pending[self.chunk_rows :]
        if pending:
            yield self._make_chunk(pending)

    def _make_chunk(self, records: list[bytes]) -> CsvChunk:
        data = b"".join(records)
        has_quotes = _QUOTE in data
        line_numbers = self._line_numbers(records, has_quotes)
        errors = _find_bad_records(
            records, data, has_quotes, line_numbers, len(self.columns), self._codec, self.encoding, self.delimiter,
            self.columns,
        )
        frame = self._parse_good(records, data, errors)
        return CsvChunk(records=records, line_numbers=line_numbers, frame=frame, errors=errors)

    def _line_numbers(self, records: list[bytes], has_quotes: bool) -> np.ndarray:
        """Start line of each record; only quoted records can span lines."""
        n = len(records)
        # One C-level split tells whether any record spans several lines.
        if has_quotes and len(b"".join(records).splitlines()) != n:
            spans = np.fromiter(
                (_physical_lines(r) if _QUOTE in r else 1 for r in records), dtype=np.int64, count=n
            )
            starts = self._next_line + np.concatenate(([0], np.cumsum(spans[:-1])))
            self._next_line += int(spans.sum())
        else:
            starts = np.arange(self._next_line, self._next_line + n, dtype=np.int64)
            self._next_line += n
        return starts.astype(np.int64, copy=False)

    def _parse_good(self, records: list[bytes], data: bytes, errors: dict[int, str]) -> pd.DataFrame:
        """Parse the records without errors into an all-``object`` frame."""
        if errors:
            good = [i for i in range(len(records)) if i not in errors]
            data = b"".join([records[i] for i in good])
        else:
            good = range(len(records))
        if not good:
            return pd.DataFrame({c: pd.Series([], dtype=object) for c in self.columns}, index=pd.Index([], dtype=np.int64))
        frame = _read_with_pandas(data, len(self.columns), self._codec, self.delimiter)
        if frame is None or len(frame) != len(good):
            frame = _read_with_csv(data.decode(self._codec), len(self.columns), self.delimiter)
        frame.columns = self.columns
        frame.index = np.asarray(good, dtype=np.int64)
        return frame

    # -- lifetime ---------------------------------------------------------

    def close(self) -> None:
        """Close the source if this reader opened it."""
        if self._owns_stream and not self._stream.closed:
            self._stream.close()

    def __enter__(self) -> CsvReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def standard_input() -> BinaryIO:
    """``sys.stdin.buffer``, or an error saying that standard input is closed (``<&-``: Python's
    ``sys.stdin`` is then None, and reading '-' raised an AttributeError with a traceback)."""
    if sys.stdin is None:
        raise OSError(errno.EBADF, "standard input is closed", "-")
    return sys.stdin.buffer


def standard_output() -> BinaryIO:
    """``sys.stdout.buffer``, or an error saying that standard output is closed (``>&-``)."""
    if sys.stdout is None:
        raise OSError(errno.EBADF, "standard output is closed", "-")
    return sys.stdout.buffer


def _open_source(source, name: str | None) -> tuple[BinaryIO, bool, str]:
    """Return (binary stream, whether we own it, display name)."""
    if isinstance(source, (str, os.PathLike)):
        if os.fspath(source) == "-":
            return standard_input(), False, name or "<stdin>"
        # Unbuffered: reads are already large blocks.
        return open(source, "rb", buffering=0), True, name or os.fspath(source)
    return source, False, name or str(getattr(source, "name", "<stream>"))


def _check_unique(names: list[str], file_name: str) -> None:
    seen: dict[str, int] = {}
    for column, col_name in enumerate(names, start=1):
        if col_name in seen:
            if _looks_like_data(names):
                raise CsvFormatError(
                    f"{file_name}: line 1 looks like data, not a header (column {column} repeats the name "
                    f"{col_name!r} of column {seen[col_name]}); the first line must name the columns"
                )
            raise CsvFormatError(
                f"{file_name}: line 1: the header's column {column} repeats the name {col_name!r} of column "
                f"{seen[col_name]}"
            )
        seen[col_name] = column


def _looks_like_data(names: list[str]) -> bool:
    """Whether header names look like a data row: at least half of them numbers."""
    numbers = 0
    for name in names:
        try:
            float(name)
            numbers += 1
        except ValueError:
            pass
    return 2 * numbers >= len(names)


def _find_bad_records(
    records: list[bytes],
    data: bytes,
    has_quotes: bool,
    line_numbers: np.ndarray,
    n_columns: int,
    codec: str,
    encoding: str,
    delimiter: str,
    names: Sequence[str] = (),
) -> dict[int, str]:
    """Return {position: reason} for records that cannot be parsed.

    Checks, in order of precedence: blank line, undecodable bytes, quoting,
    field count.  Unquoted records are checked by counting delimiters (C
    speed); only records with quotes go through the csv module.
    """
    delim = delimiter.encode("ascii")
    expected = n_columns - 1
    # Delimiter counts are exact field counts for unquoted records; blank
    # records fail this test unless there is one column, hence the 2nd test.
    counts = [r.count(delim) for r in records]
    suspects = {i for i, count in enumerate(counts) if count != expected}
    if expected == 0:
        suspects.update(i for i, r in enumerate(records) if r in _TERMINATORS)
    if has_quotes:
        suspects.update(i for i, r in enumerate(records) if _QUOTE in r)
    undecodable = _undecodable(records, data, codec, encoding)
    suspects.update(undecodable)
    if has_quotes:
        suspects.difference_update(_well_formed_quoted(records, suspects, undecodable, n_columns, codec, delimiter))
    errors: dict[int, str] = {}
    for i in sorted(suspects):
        reason = _record_problem(records[i], counts[i], n_columns, undecodable.get(i), delimiter, codec, encoding, names)
        if reason is not None:
            errors[i] = f"line {line_numbers[i]}: {reason}"
    return errors


def _well_formed_quoted(
    records: list[bytes], suspects: set[int], undecodable: dict[int, str], n_columns: int, codec: str, delimiter: str
) -> list[int]:
    """Positions of quoted records that parse into `n_columns` fields.

    All quoted records go through one csv.reader, which is much faster than
    one reader per record.  ``reader.line_num`` counts the records consumed,
    so it proves each row came from exactly one record; if the rows and the
    records fall out of step (a malformed record), or the reader raises, the
    result is empty and every suspect is checked on its own.
    """
    positions = [i for i in sorted(suspects) if i not in undecodable and not records[i].count(_QUOTE) & 1]
    if not positions:
        return []
    reader = csv.reader([records[i].decode(codec) for i in positions], delimiter=delimiter, strict=True)
    try:
        shape = [(len(row), reader.line_num) for row in reader]
    except csv.Error:
        return []
    in_step = len(shape) == len(positions) and all(
        line_num == k for k, (_, line_num) in enumerate(shape, start=1)
    )
    if not in_step:
        return []
    return [i for i, (n_fields, _) in zip(positions, shape) if n_fields == n_columns]


def _undecodable(records: list[bytes], data: bytes, codec: str, encoding: str) -> dict[int, int]:
    """Decode the chunk at once; only on failure locate the bad records: {position: byte offset}."""
    try:
        data.decode(codec)
        return {}
    except UnicodeDecodeError:
        pass
    bad = {}
    for i, record in enumerate(records):
        try:
            record.decode(codec)
        except UnicodeDecodeError as exc:
            bad[i] = exc.start
    return bad


def _record_problem(
    record: bytes,
    count: int,
    n_columns: int,
    bad_offset: int | None,
    delimiter: str,
    codec: str,
    encoding: str = "utf-8",
    names: Sequence[str] = (),
) -> str | None:
    """Why one suspect record cannot be parsed, or None if it can."""
    if record in _TERMINATORS:
        return "empty line"
    if bad_offset is not None:
        prefix = record[:bad_offset].decode(codec, errors="replace")
        where = _column_label(_field_index(prefix, delimiter), names)
        return f"{where}bytes not valid {encoding} at offset {bad_offset}"
    if _QUOTE not in record:
        return f"expected {n_columns} fields, found {count + 1}"
    text = record.decode(codec)
    if _has_odd_quotes(record):
        return f"{_column_label(_quote_problem_field(text, delimiter), names)}unterminated quoted field"
    fields = _parse_quoted(text, delimiter)
    if isinstance(fields, str):
        return f"{_column_label(_quote_problem_field(text, delimiter), names)}{fields}"
    if len(fields) != n_columns:
        return f"expected {n_columns} fields, found {len(fields)}"
    return None


def _field_index(prefix: str, delimiter: str) -> int:
    """0-based field the end of `prefix` (the start of a record's text) lies in."""
    field, in_quotes = 0, False
    for ch in prefix:
        if ch == '"':
            in_quotes = not in_quotes
        elif ch == delimiter and not in_quotes:
            field += 1
    return field


def _quote_problem_field(text: str, delimiter: str) -> int | None:
    """0-based field where a record's quoting goes wrong, as RFC 4180 reads it.

    A quote opens a field only at the field's start; after the closing quote
    only a delimiter, a line end or a second quote (an escaped one) may follow.
    A quote left open names the field it opened; a quote inside an unquoted
    field (legal for the csv module, but it breaks the splitter's quote
    parity) names the field of the last such quote.
    """
    field, in_quotes, at_start, after_quote, opened = 0, False, True, False, None
    for ch in text:
        if in_quotes:
            if ch == '"':
                in_quotes, after_quote = False, True
            continue
        if after_quote:
            after_quote = False
            if ch == '"':
                in_quotes = True
                continue
            if ch not in (delimiter, "\r", "\n"):
                return field
        if ch == delimiter:
            field, at_start = field + 1, True
        elif ch == '"' and at_start:
            in_quotes, opened, at_start = True, field, False
        else:
            at_start = False
    if in_quotes:
        return opened
    if '"' in text:
        return _field_index(text[: text.rindex('"')], delimiter)
    return None


def _column_label(field: int | None, names: Sequence[str]) -> str:
    """'column 'name': ' for a field index (a position past the header's fields by number)."""
    if field is None:
        return ""
    if field < len(names):
        return f"column {names[field]!r}: "
    return f"field {field + 1}: "


def _read_with_pandas(data: bytes, n_columns: int, codec: str, delimiter: str) -> pd.DataFrame | None:
    """Parse well-formed records with pandas' C parser, fields as exact text.

    Returns None where the C parser would not give the exact text: it strips
    a leading UTF-8 BOM from its input, and before pandas 3.1 it ends a field
    at a NUL byte ('x\\x00y' -> 'x').
    """
    if data.startswith(_UTF8_BOM) or _NUL in data:
        return None
    try:
        return pd.read_csv(
            io.BytesIO(data),
            header=None,
            names=range(n_columns),
            index_col=False,
            dtype=object,
            keep_default_na=False,
            na_filter=False,
            skip_blank_lines=False,
            encoding=codec,
            sep=delimiter,
            quotechar='"',
            doublequote=True,
            engine="c",
        )
    except (pd.errors.ParserError, ValueError):
        return None


def _read_with_csv(text: str, n_columns: int, delimiter: str) -> pd.DataFrame:
    """Parse well-formed records with the csv module (the slower fallback)."""
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    return pd.DataFrame(rows, columns=range(n_columns), dtype=object)


def count_records(source, encoding: str = "utf-8", delimiter: str = ",") -> int:
    """Count data records (excluding the header) with the reader's splitting.

    Parameters
    ----------
    source : str, os.PathLike or binary file object
        As for :class:`CsvReader`.
    encoding : str, default "utf-8"
        Checked for ASCII compatibility; only the header and multi-line
        records are decoded (to split spans opened by a stray quote as the
        reader does).
    delimiter : str, default ","
        Field separator, as for :class:`CsvReader`.

    Returns
    -------
    int
        Number of records after the header, bad ones included; 0 for an
        empty file.
    """
    codec = _decoding_codec(encoding)
    stream, owns, _ = _open_source(source, None)
    try:
        splitter = _RecordSplitter(stream, BLOCK_SIZE, MAX_RECORD_BYTES)
        total = 0
        for batch in splitter:
            if splitter.accept is None:
                content = _strip_terminator(batch[0])[0]
                if codec == "utf-8" and content.startswith(_UTF8_BOM):
                    content = content[len(_UTF8_BOM) :]
                names = _parse_quoted(content.decode(codec, errors="replace"), delimiter)
                n_columns = len(names) if not isinstance(names, str) else content.count(delimiter.encode()) + 1
                splitter.accept = _record_acceptor(n_columns, codec, delimiter)
            total += len(batch)
    finally:
        if owns:
            stream.close()
    return max(total - 1, 0)


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def _quote_field(value, delimiter: str) -> str:
    """CSV-quote `value` under csv.QUOTE_MINIMAL rules; None -> ''."""
    if value is None:
        return ""
    text = str(value)
    if delimiter in text or '"' in text or "\n" in text or "\r" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def append_fields(
    record: bytes,
    values: Sequence,
    *,
    encoding: str = "utf-8",
    delimiter: str = ",",
    terminator: bytes = b"\n",
) -> bytes:
    """Append fields to a raw record, leaving its original bytes intact.

    Parameters
    ----------
    record : bytes
        A raw record, with or without its line terminator.
    values : sequence
        Values to append; each is ``str()``-ed and quoted when needed
        (``csv.QUOTE_MINIMAL`` rules); None becomes an empty field.
    encoding : str, default "utf-8"
        Encoding of the appended text.
    delimiter : str, default ","
        Field separator.
    terminator : bytes, default b"\\n"
        Used when `record` has no terminator of its own.

    Returns
    -------
    bytes
        ``record`` without its terminator, then ``delimiter`` and each value,
        then the record's own terminator (or `terminator`).  The record's
        content is an exact prefix of the result.

    Examples
    --------
    >>> append_fields(b'1,"a,b"\\r\\n', [-3.5, "x,y", None])
    b'1,"a,b",-3.5,"x,y",\\r\\n'
    """
    content, own_terminator = _strip_terminator(record)
    extra = "".join(delimiter + _quote_field(v, delimiter) for v in values)
    return content + extra.encode(_appending_codec(encoding)) + (own_terminator or terminator)


def format_header(
    names: Sequence[str],
    *,
    encoding: str = "utf-8",
    delimiter: str = ",",
    terminator: bytes = b"\n",
) -> bytes:
    """Encode column names as a CSV header record.

    Parameters
    ----------
    names : sequence of str
        Column names, quoted where needed (``csv.QUOTE_MINIMAL`` rules).
    encoding, delimiter, terminator
        As for :func:`append_fields`.

    Returns
    -------
    bytes
        The header record including `terminator`.

    Examples
    --------
    >>> format_header(["id", "a,b"])
    b'id,"a,b"\\n'
    """
    if len(names) == 1 and names[0] == "":
        # A lone empty name must be quoted, or the header reads as a blank line.
        text = '""'
    else:
        text = delimiter.join(_quote_field(n, delimiter) for n in names)
    return text.encode(_appending_codec(encoding)) + terminator


class AtomicWriter:
    """Write a file so that it appears complete or not at all.

    Within the ``with`` block, writes go to a buffered temporary file in the
    target's directory (same file system, so the final rename is atomic).
    Leaving the block normally flushes, optionally fsyncs, and
    ``os.replace()``s the temporary file onto `path`, replacing any existing
    file.  Leaving it with any exception, ``KeyboardInterrupt`` included,
    deletes the temporary file and leaves `path` untouched.  An ``OSError``
    (a full disk, a missing folder) names `path`, never the temporary file.
    An existing file keeps its permissions; a symbolic link stays a link,
    and the file it points to is replaced.  A path that is neither a
    regular file nor absent (``/dev/null``, a named pipe) is written
    straight through, like ``"-"``: renaming a file onto it would destroy
    it (``/dev/null`` for every program, when run as root).

    Parameters
    ----------
    path : str or os.PathLike
        Destination.  ``"-"`` writes straight to ``sys.stdout.buffer``;
        atomicity is impossible there, so output written before an exception
        stays written.
    buffer_size : int, default 1 MiB
        Write buffer size; large buffers turn many small record writes into
        few system calls.
    fsync : bool, default True
        Force the data to disk before the rename, so a crash cannot leave a
        renamed but empty file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.csv"
    >>> with AtomicWriter(target) as f:
    ...     _ = f.write(b"a,b\\n")
    >>> target.read_bytes()
    b'a,b\\n'
    """

    def __init__(self, path, buffer_size: int = 1 << 20, fsync: bool = True):
        self.path = path
        self.buffer_size = buffer_size
        self.fsync = fsync
        self._file: io.BufferedWriter | None = None
        self._tmp_path: str | None = None
        self.target: str | None = None  # what the temporary file replaces: `path`, or the file a link points to
        self.in_place = False  # a device or a pipe: written straight to `path`, with no rename

    def __enter__(self):
        if os.fspath(self.path) == "-":
            # a full disk or a closed pipe behind stdout names it ('OSError: [Errno 28]' named nothing)
            return _NamedFile(standard_output(), "standard output")
        self.open()
        return _NamedFile(self._file, os.fspath(self.path))

    def open(self) -> None:
        """Create the temporary file (``__enter__`` without the ``with``)."""
        path = os.fspath(self.path)
        if os.path.isdir(path):
            raise IsADirectoryError(errno.EISDIR, "is a directory, not a file", path)
        existing = _stat_or_none(path)  # through links
        try:
            try:
                if existing is not None and not stat.S_ISREG(existing.st_mode):
                    self.in_place, self.target = True, path
                    self._file = io.BufferedWriter(io.FileIO(path, "wb"), self.buffer_size)
                    return
                self.target = os.path.realpath(path) if os.path.islink(path) else path
                fd = self._create_temp()
                if existing is not None:
                    os.chmod(self._tmp_path, stat.S_IMODE(existing.st_mode))
            except OSError as exc:
                raise _naming(exc, path) from None
            self._file = io.BufferedWriter(io.FileIO(fd, "wb"), self.buffer_size)
        except BaseException:
            # an interruption here (Ctrl-C, the CLI's SIGTERM) never reaches
            # __exit__: a ``with`` whose __enter__ raises does not call it
            self.discard()
            raise

    def _create_temp(self) -> int:
        """Create the hidden temporary file beside the target; return its descriptor.

        Its name is recorded before the file exists, never after: a signal's
        Python handler runs between any two bytecodes, and one that raised
        between ``os.open`` returning and the name's assignment left the file
        behind (`test_sigterm_and_ctrl_c_leave_no_temporary_file`, under load:
        the test signals as soon as the first of the two outputs' files appears).
        Created with mode 0o666 so the umask gives the final file ordinary
        permissions (tempfile.mkstemp would make it 0o600).
        """
        while True:
            self._tmp_path = _temp_name_beside(self.target)
            try:
                return os.open(self._tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                self._tmp_path = None  # another writer's file (48 random bits alike): not ours to remove

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._file is None:
            if os.fspath(self.path) == "-" and sys.stdout is not None:
                _NamedFile(sys.stdout.buffer, "standard output").flush()
            return False
        try:
            if exc_type is None:
                self.prepare()
                self.replace()
        finally:
            self.discard()
        return False

    def prepare(self) -> None:
        """Flush (and fsync) the temporary file and close it: all but the rename."""
        try:
            self._file.flush()
            if self.fsync and not self.in_place:  # a pipe or a device has nothing to sync
                os.fsync(self._file.fileno())
            self._file.close()
        except OSError as exc:
            raise _naming(exc, os.fspath(self.path)) from None

    def replace(self) -> None:
        """Rename the prepared temporary file onto `path` (nothing to do for a device or a pipe)."""
        if self.in_place:
            return
        try:
            os.replace(self._tmp_path, self.target)
        except OSError as exc:
            raise _naming(exc, os.fspath(self.path)) from None
        self._tmp_path = None

    def discard(self) -> None:
        """Delete the temporary file if it was not renamed; never raises ``OSError``."""
        if self._file is not None:
            try:
                self._file.close()  # flushes: fails again on a full disk
            except OSError:
                with contextlib.suppress(OSError):
                    self._file.raw.close()
            self._file = None
        if self._tmp_path is not None:
            _remove_quietly(self._tmp_path)
            self._tmp_path = None


class _NamedFile:
    """A binary file whose write errors name the final output, not the temporary file."""

    def __init__(self, file, path):
        self._file, self._path = file, path

    def write(self, data) -> int:
        try:
            return self._file.write(data)
        except OSError as exc:
            raise _naming(exc, self._path) from None

    def writelines(self, lines) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        try:
            self._file.flush()
        except OSError as exc:
            raise _naming(exc, self._path) from None


def _naming(exc: OSError, path: str) -> OSError:
    """The same error, naming `path`."""
    return type(exc)(exc.errno, exc.strerror or str(exc), path) if exc.errno else OSError(f"{path}: {exc}")


class AtomicOutputs:
    """Several :class:`AtomicWriter` outputs that appear together or not at all.

    All temporary files are written, flushed and fsynced first; only then are
    they renamed onto their targets, one after another.  If a rename fails,
    the targets already renamed get their previous contents back (a hard-link
    backup taken before the renames; a target that did not exist is removed),
    so a failure on any path -- a full disk, a folder given as a file, an
    interruption -- leaves every target as it was and no temporary file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> with AtomicOutputs([root / "v.csv", root / "r.csv"]) as (v, r):
    ...     _ = v.write(b"a\\n"), r.write(b"b\\n")
    >>> sorted(p.name for p in root.iterdir())
    ['r.csv', 'v.csv']
    """

    def __init__(self, paths, buffer_size: int = 1 << 20, fsync: bool = True):
        self._writers = [AtomicWriter(p, buffer_size, fsync) for p in paths]

    def __enter__(self):
        files = []
        try:
            for writer in self._writers:
                files.append(writer.__enter__())
        except BaseException:
            self._discard()
            raise
        return files

    def __exit__(self, exc_type, exc, tb) -> bool:
        files = [w for w in self._writers if w._file is not None]
        try:
            if any(os.fspath(w.path) == "-" for w in self._writers) and sys.stdout is not None:
                # its write errors (a full disk behind it) belong to this block, named; after another
                # error, that error is the one to report
                with contextlib.suppress(*(() if exc_type is None else (OSError,))):
                    _NamedFile(sys.stdout.buffer, "standard output").flush()
            if exc_type is None:
                for writer in files:
                    writer.prepare()
                self._replace_all(files)
        finally:
            self._discard()
        return False

    @staticmethod
    def _replace_all(writers) -> None:
        backups, done = {}, []
        try:
            for writer in writers:
                if writer.in_place:
                    continue  # written in place: nothing to rename or roll back
                path = writer.target
                if os.path.lexists(path):
                    # recorded before it exists, as AtomicWriter._create_temp does
                    backups[path] = _temp_name_beside(path) + ".old"
                    try:
                        os.link(path, backups[path])
                    except OSError:
                        del backups[path]  # no hard links here: best effort
                writer.replace()
                done.append(path)
        except BaseException:
            for path in reversed(done):  # roll back
                with contextlib.suppress(OSError):
                    if path in backups:
                        os.replace(backups.pop(path), path)
                    else:
                        os.remove(path)
            raise
        finally:
            for backup in backups.values():
                _remove_quietly(backup)

    def _discard(self) -> None:
        for writer in self._writers:
            writer.discard()


@contextlib.contextmanager
def atomic_directories(paths):
    """Temporary directory names beside `paths`, moved onto them when the block ends normally.

    Yields one hidden name per path (not created: the writer creates it).
    Leaving the block normally renames each onto its path, one after
    another, replacing an existing directory (moved aside first, then
    deleted); leaving it with an exception leaves the paths untouched. Either
    way no temporary directory remains.
    """
    temps = [_temp_name_beside(os.path.abspath(os.fspath(p))) for p in paths]
    try:
        yield temps
        for tmp, path in zip(temps, paths):
            _replace_directory(tmp, os.fspath(path))
    finally:
        for tmp in temps:
            shutil.rmtree(tmp, ignore_errors=True)


def _replace_directory(tmp: str, path: str) -> None:
    """Move a finished directory into place, replacing an old one."""
    if not os.path.exists(path):
        os.rename(tmp, path)
        return
    old = _temp_name_beside(os.path.abspath(path)) + ".old"
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:  # a failed rename, or an interruption on either side of it: the old one goes back
        if os.path.exists(path):
            os.rename(path, tmp)  # the new one, renamed before the interruption: removed with the temporaries
        os.rename(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def remove_temporaries(path) -> None:
    """Delete the hidden temporary files that writers of `path` left (``.<name>.<hex>.tmp``).

    A writer removes its own temporary file however it ends, unless its
    process is killed; call this once no writer of `path` runs any more.
    """
    directory, base = os.path.split(os.fspath(path))
    for tmp in glob.glob(os.path.join(directory or ".", f".{glob.escape(base)}.*.tmp")):
        _remove_quietly(tmp)


def _temp_name_beside(path: str) -> str:
    directory, base = os.path.split(path)
    return os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")


def _stat_or_none(path: str):
    try:
        return os.stat(path)
    except OSError:
        return None


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass

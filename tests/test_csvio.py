"""Tests for vaefilter.io.csvio: byte-exact chunked reading and atomic writing."""

from __future__ import annotations

import csv
import io
import os
import stat
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaefilter.io import csvio
from vaefilter.io.csvio import (
    AtomicWriter,
    CsvChunk,
    CsvFormatError,
    CsvReader,
    append_fields,
    count_records,
    format_header,
)

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def read_all(data: bytes, **kwargs) -> tuple[CsvReader, list[CsvChunk]]:
    reader = CsvReader(io.BytesIO(data), **kwargs)
    return reader, list(reader)


def reassemble(reader: CsvReader, chunks: list[CsvChunk]) -> bytes:
    return reader.header + b"".join(r for c in chunks for r in c.records)


def all_errors(chunks: list[CsvChunk]) -> dict[int, str]:
    """Errors keyed by position in the whole file's data records."""
    out, offset = {}, 0
    for chunk in chunks:
        out.update({offset + i: reason for i, reason in chunk.errors.items()})
        offset += len(chunk.records)
    return out


def parsed_rows(chunks: list[CsvChunk]) -> list[list[str]]:
    return [row for c in chunks for row in c.frame.to_numpy().tolist()]


def csv_module_rows(data: bytes, encoding: str = "utf-8-sig") -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode(encoding), newline="")))


def write_table(rows, terminator: str) -> bytes:
    """CSV text from the csv module, each row ending in `terminator`.

    Rows are written with lineterminator "\r\n" and that ending is then
    swapped: the csv module only quotes fields containing characters of its
    own lineterminator, and a bare "\r" or "\n" in an unquoted field would
    end the record.
    """
    out = []
    for row in rows:
        buf = io.StringIO(newline="")
        csv.writer(buf, lineterminator="\r\n").writerow(row)
        out.append(buf.getvalue()[:-2] + terminator)
    return "".join(out).encode("utf-8")


TRICKY_ROWS = [
    ["id", "text", "amount", "note"],
    ["1", "plain", "1.50", "  7"],
    ["2", "comma, inside", "1e3", 'say "hi"'],
    ["3", "line\nbreak", "-0.0", "crlf\r\ninside"],
    ["4", "ünïcødé ✓", "007", ""],
    ["5", "", "1,234.5", 'ends with quote"'],
    ["6", "cr\ronly", "NaN", "NA"],
]

# Block sizes small enough that quoted multi-line records straddle blocks.
BLOCK_SIZES = [1, 2, 5, 17, None]


# ---------------------------------------------------------------------------
# byte-exact round trips
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("terminator", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("block_size", BLOCK_SIZES)
@pytest.mark.parametrize("chunk_rows", [1, 2, 1000])
def test_round_trip_is_byte_exact(terminator, block_size, chunk_rows):
    data = write_table(TRICKY_ROWS, terminator)
    reader, chunks = read_all(data, chunk_rows=chunk_rows, block_size=block_size)
    assert reassemble(reader, chunks) == data
    assert reader.columns == TRICKY_ROWS[0]
    assert reader.line_terminator == terminator.encode()
    assert all_errors(chunks) == {}
    assert parsed_rows(chunks) == TRICKY_ROWS[1:]
    assert all(len(c.records) <= chunk_rows for c in chunks)


@pytest.mark.parametrize("block_size", BLOCK_SIZES)
def test_bom_and_missing_final_newline_survive(block_size):
    data = b"\xef\xbb\xbf" + write_table(TRICKY_ROWS, "\r\n").rstrip(b"\r\n")
    reader, chunks = read_all(data, chunk_rows=3, block_size=block_size)
    assert reassemble(reader, chunks) == data
    assert reader.header.startswith(b"\xef\xbb\xbf")
    assert reader.columns == TRICKY_ROWS[0]
    assert chunks[-1].records[-1] == b'6,"cr\ronly",NaN,NA'
    assert parsed_rows(chunks) == TRICKY_ROWS[1:]


def test_frame_holds_exact_text_as_object_columns():
    reader, (chunk,) = read_all(b"a,b,c\n1.50,1e3,  7\n,NA,null\n")
    assert list(chunk.frame.dtypes) == [object] * 3
    assert chunk.frame.to_dict("list") == {"a": ["1.50", ""], "b": ["1e3", "NA"], "c": ["  7", "null"]}
    assert list(chunk.frame.index) == [0, 1]


def test_line_numbers_count_physical_lines_of_multiline_records():
    data = b'a,b\n1,"x\ny\nz"\n2,w\r\n3,"p\r\nq"\r\n4,v'
    reader, (chunk,) = read_all(data, block_size=3)
    assert chunk.line_numbers.tolist() == [2, 5, 6, 8]
    assert chunk.line_numbers.dtype == np.int64


def test_line_numbers_continue_across_chunks():
    data = b'h\n"a\nb"\nc\nd\n'
    _, chunks = read_all(data, chunk_rows=1, block_size=2)
    assert [c.line_numbers.tolist() for c in chunks] == [[2], [4], [5]]


def test_multiline_header_shifts_line_numbers():
    reader, (chunk,) = read_all(b'"a\nb",c\n1,2\n')
    assert reader.columns == ["a\nb", "c"]
    assert chunk.line_numbers.tolist() == [3]


def test_latin1_and_other_delimiters():
    data = "name;prix\r\ncafé;1,5\r\n\"a;b\";2\r\n".encode("latin-1")
    reader, (chunk,) = read_all(data, encoding="latin-1", delimiter=";")
    assert reassemble(reader, [chunk]) == data
    assert chunk.frame.to_numpy().tolist() == [["café", "1,5"], ["a;b", "2"]]


def test_tab_delimited():
    reader, (chunk,) = read_all(b"a\tb\n1\t2\n3\t4\t5\n")
    assert chunk.frame["a\tb"].tolist() == ["1\t2", "3\t4\t5"]  # "," splits nothing
    reader, (chunk,) = read_all(b"a\tb\n1\t2\n3\t4\t5\n", delimiter="\t")
    assert chunk.errors == {1: "line 3: expected 2 fields, found 3"}


def test_header_only_file_gives_no_chunks():
    reader, chunks = read_all(b"a,b")
    assert chunks == [] and reader.columns == ["a", "b"] and reader.line_terminator == b"\n"


# ---------------------------------------------------------------------------
# malformed records: reported per record, bytes kept
# ---------------------------------------------------------------------------

MALFORMED = (
    b"a,b,c\n"
    b"1,2,3\n"  # line 2 ok
    b"1,2\n"  # line 3 too few
    b"\n"  # line 4 blank
    b"1,2,3,4\n"  # line 5 too many
    b"1,\xff\xfe,3\n"  # line 6 not utf-8
    b'1,"x,y",3\n'  # line 7 ok
    b'1,"a"b,3\n'  # line 8 malformed quoting
    b'"q\nr",2,3,4\n'  # line 9-10 quoted, too many fields: split at its line ends
    b"7,8,9\r\n"  # line 11 ok
    b'1,"never closed,3\n'  # line 12 never closed: the stray quote damages only its line
    b"4,5,6\n"  # line 13 ok
)

EXPECTED_ERRORS = {
    1: "line 3: expected 3 fields, found 2",
    2: "line 4: empty line",
    3: "line 5: expected 3 fields, found 4",
    4: "line 6: column 'b': bytes not valid utf-8 at offset 2",
    6: "line 8: column 'b': malformed quoted field (',' expected after '\"')",
    7: "line 9: column 'a': unterminated quoted field",
    8: "line 10: column 'a': unterminated quoted field",
    10: "line 12: column 'b': unterminated quoted field",
}


@pytest.mark.parametrize("block_size", BLOCK_SIZES)
@pytest.mark.parametrize("chunk_rows", [1, 3, 100])
def test_malformed_records_are_reported_and_kept(block_size, chunk_rows):
    reader, chunks = read_all(MALFORMED, chunk_rows=chunk_rows, block_size=block_size)
    assert reassemble(reader, chunks) == MALFORMED
    assert all_errors(chunks) == EXPECTED_ERRORS
    assert parsed_rows(chunks) == [["1", "2", "3"], ["1", "x,y", "3"], ["7", "8", "9"], ["4", "5", "6"]]
    records = [r for c in chunks for r in c.records]
    assert records[-2:] == [b'1,"never closed,3\n', b"4,5,6\n"]


def test_every_record_is_either_parsed_or_an_error():
    _, chunks = read_all(MALFORMED, chunk_rows=4)
    for chunk in chunks:
        parsed = set(chunk.frame.index)
        assert parsed.isdisjoint(chunk.errors)
        assert parsed | set(chunk.errors) == set(range(len(chunk.records)))


def test_single_column_blank_line_is_an_error_but_quoted_empty_is_not():
    _, (chunk,) = read_all(b'x\n1\n\n""\n')
    assert chunk.errors == {1: "line 3: empty line"}
    assert chunk.frame["x"].tolist() == ["1", ""]


def test_undecodable_chunk_only_flags_bad_records():
    data = "a,b\nü,1\n".encode() + b"\xc3,2\n" + "é,3\n".encode()
    _, (chunk,) = read_all(data)
    assert chunk.errors == {1: "line 3: column 'a': bytes not valid utf-8 at offset 0"}
    assert chunk.frame["a"].tolist() == ["ü", "é"]


def test_bom_inside_data_is_kept_as_text():
    data = b"a,b\n" + b"\xef\xbb\xbfx,1\n"
    reader, (chunk,) = read_all(data)
    assert chunk.frame["a"].tolist() == ["\ufeffx"]


def test_nul_bytes_inside_fields_are_kept():
    # pandas' C parser before 3.1 ends a field at a NUL byte ('x\x00y' -> 'x');
    # found on pandas 3.0.6, where the round-trip property test failed
    data = b"a,b\nx\x00y,1\n\x00,2\n"
    reader, chunks = read_all(data)
    assert parsed_rows(chunks) == [["x\x00y", "1"], ["\x00", "2"]]
    assert reassemble(reader, chunks) == data


@pytest.mark.parametrize("block_size", [3, 64, None])
def test_stray_quote_cannot_swallow_the_rest_of_the_file(monkeypatch, block_size):
    monkeypatch.setattr(csvio, "MAX_RECORD_BYTES", 40)
    rows = b"".join(b"%d,ok\n" % i for i in range(20))
    data = b"a,b\n" + b'1,5" screen\n' + rows
    reader, chunks = read_all(data, chunk_rows=7, block_size=block_size)
    assert reassemble(reader, chunks) == data
    assert all_errors(chunks) == {0: "line 2: column 'b': unterminated quoted field"}
    assert len(parsed_rows(chunks)) == 20


# one stray quote on line 12 of a file with no other quote (issue 14, item 1)
_STRAY_ROWS = [b"%d,%d.5,x\n" % (i, i) for i in range(2000)]
_STRAY = b"a,b,c\n" + b"".join(_STRAY_ROWS[:10]) + b'10,10.5,x"\n' + b"".join(_STRAY_ROWS[11:])


@pytest.mark.parametrize("max_record_bytes", [1 << 24, 100])
@pytest.mark.parametrize("block_size", [7, 64, None])
def test_stray_quote_damages_only_its_line_whatever_the_file_size(monkeypatch, max_record_bytes, block_size):
    # limit 1 << 24: the file is far smaller than the limit, so the quote stays open to
    # the end of the file; limit 100: the file is far larger (the 16 MiB case, scaled down)
    monkeypatch.setattr(csvio, "MAX_RECORD_BYTES", max_record_bytes)
    reader, chunks = read_all(_STRAY, chunk_rows=300, block_size=block_size)
    assert reassemble(reader, chunks) == _STRAY
    assert all_errors(chunks) == {10: "line 12: column 'c': unterminated quoted field"}
    rows = parsed_rows(chunks)
    assert len(rows) == 1999 and rows[10] == ["11", "11.5", "x"] and rows[-1] == ["1999", "1999.5", "x"]
    assert [int(n) for c in chunks for n in c.line_numbers][-1] == 2001


@pytest.mark.parametrize("block_size", [5, 64, None])
def test_stray_quote_before_a_real_multiline_field_keeps_that_field(block_size):
    # the stray quote on line 3 would pair with the quote opening line 5's field
    data = b'a,b\n1,x\n2,5" screen\n3,y\n4,"two\nlines"\n5,z\n6,"x"""\n'
    reader, chunks = read_all(data, chunk_rows=2, block_size=block_size)
    assert reassemble(reader, chunks) == data
    assert all_errors(chunks) == {1: "line 3: column 'b': unterminated quoted field"}
    assert parsed_rows(chunks) == [["1", "x"], ["3", "y"], ["4", "two\nlines"], ["5", "z"], ["6", 'x"']]
    assert [int(n) for c in chunks for n in c.line_numbers] == [2, 3, 4, 5, 7, 8]


def test_count_records_splits_stray_quotes_as_the_reader_does(tmp_path):
    path = tmp_path / "stray.csv"
    path.write_bytes(_STRAY)
    assert count_records(path) == 2000
    path.write_bytes(b"a;b\n1;x\n2;5\" screen\n3;y\n")
    assert count_records(path, delimiter=";") == 3


def test_count_records_matches_reader(tmp_path, monkeypatch):
    monkeypatch.setattr(csvio, "BLOCK_SIZE", 4)
    path = tmp_path / "m.csv"
    path.write_bytes(MALFORMED)
    _, chunks = read_all(MALFORMED)
    assert count_records(path) == sum(len(c.records) for c in chunks) == 12
    assert count_records(io.BytesIO(b"")) == 0
    assert count_records(io.BytesIO(b"h")) == 0


# ---------------------------------------------------------------------------
# file-level problems and sources
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "in.csv: line 1: file is empty"),
        (b"\n1,2\n", "in.csv: line 1: empty header line"),
        (b"\xef\xbb\xbf\r\n", "in.csv: line 1: empty header line"),
        (b"a,b,a\n", "in.csv: line 1: the header's column 3 repeats the name 'a' of column 1"),
        (b"a,\xff\n", "in.csv: line 1: header bytes not valid utf-8 at offset 2"),
        (b'a,"b\n1,2\n', "in.csv: line 1: unterminated quoted field in header"),
    ],
)
def test_file_level_problems_raise_with_file_and_line(data, message):
    with pytest.raises(CsvFormatError, match="^" + message):
        CsvReader(io.BytesIO(data), name="in.csv")


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="ASCII-compatible"):
        CsvReader(io.BytesIO(b"a\n"), encoding="utf-16")
    with pytest.raises(ValueError, match="delimiter"):
        CsvReader(io.BytesIO(b"a\n"), delimiter='"')
    with pytest.raises(ValueError, match="chunk_rows"):
        CsvReader(io.BytesIO(b"a\n"), chunk_rows=0)


def test_path_source_is_closed_and_named(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"a\n1\n")
    with CsvReader(path) as reader:
        assert reader.name == str(path)
        assert [c.frame["a"].tolist() for c in reader] == [["1"]]
        stream = reader._stream
    assert stream.closed
    with pytest.raises(CsvFormatError, match=str(path)):
        path.write_bytes(b"a,a\n")
        CsvReader(str(path))


def test_stdin_source(monkeypatch):
    class FakeStdin:
        buffer = io.BytesIO(b"a,b\n1,2\n")

    monkeypatch.setattr(sys, "stdin", FakeStdin)
    with CsvReader("-") as reader:
        assert reader.name == "<stdin>"
        assert [c.frame.to_numpy().tolist() for c in reader] == [[["1", "2"]]]
    assert not FakeStdin.buffer.closed


# ---------------------------------------------------------------------------
# writing helpers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("record", [b"1,x\r\n", b"1,x\n", b"1,x\r", b"1,x", b'1,"a\nb"\n'])
def test_append_fields_keeps_prefix_and_terminator(record):
    out = append_fields(record, [1.5, "p,q", 'q"t', "l\nm", None, ""], terminator=b"\r\n")
    content = record.rstrip(b"\r\n")
    own = record[len(content) :] or b"\r\n"
    assert out.startswith(content) and out.endswith(own)
    assert out[len(content) : -len(own)] == b',1.5,"p,q","q""t","l\nm",,'
    row = csv_module_rows(out)[0]
    assert row[-6:] == ["1.5", "p,q", 'q"t', "l\nm", "", ""]


def test_append_fields_encoding_and_delimiter():
    out = append_fields("é;1\n".encode("latin-1"), ["à;b"], encoding="latin-1", delimiter=";")
    assert out == "é;1;\"à;b\"\n".encode("latin-1")


@pytest.mark.parametrize("names", [["a", "b c", "d,e", 'f"g', "h\ni"], [""], ["", "x"]])
def test_format_header_round_trips(names):
    header = format_header(names, terminator=b"\r\n")
    reader = CsvReader(io.BytesIO(header))
    assert reader.columns == names and reader.header == header


# ---------------------------------------------------------------------------
# AtomicWriter
# ---------------------------------------------------------------------------


def test_atomic_writer_replaces_existing_file(tmp_path):
    target = tmp_path / "out.csv"
    target.write_bytes(b"old")
    with AtomicWriter(target) as f:
        f.write(b"new,")
        f.write(b"data\n")
        assert target.read_bytes() == b"old"  # nothing visible until the end
    assert target.read_bytes() == b"new,data\n"
    assert os.listdir(tmp_path) == ["out.csv"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_writer_leaves_nothing_on_error(tmp_path, error):
    target = tmp_path / "out.csv"
    with pytest.raises(error):
        with AtomicWriter(str(target), buffer_size=4) as f:
            f.write(b"partial data")
            raise error()
    assert os.listdir(tmp_path) == []


def test_atomic_writer_keeps_existing_file_on_error(tmp_path):
    target = tmp_path / "out.csv"
    target.write_bytes(b"old")
    with pytest.raises(ValueError):
        with AtomicWriter(target, fsync=False) as f:
            f.write(b"new")
            raise ValueError
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.csv"]


def test_atomic_writer_uses_umask_permissions(tmp_path):
    target = tmp_path / "out.csv"
    with AtomicWriter(target) as f:
        f.write(b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_writer_dash_writes_to_stdout(capsysbinary):
    with AtomicWriter("-") as f:
        f.write(b"a,b\n")
    assert capsysbinary.readouterr().out == b"a,b\n"


def test_copying_records_through_atomic_writer_reproduces_file(tmp_path):
    data = b"\xef\xbb\xbf" + write_table(TRICKY_ROWS, "\r\n")[:-2]
    source = tmp_path / "in.csv"
    source.write_bytes(data)
    target = tmp_path / "out.csv"
    with CsvReader(source, chunk_rows=2) as reader, AtomicWriter(target) as f:
        f.write(reader.header)
        for chunk in reader:
            f.writelines(chunk.records)
    assert target.read_bytes() == data


# ---------------------------------------------------------------------------
# property test
# ---------------------------------------------------------------------------

FIELD_TEXT = st.text(alphabet=st.sampled_from(list('ab1 ,"\n\r\x00;é✓.-')), max_size=8)


@st.composite
def csv_files(draw):
    n_cols = draw(st.integers(1, 4))
    header = draw(st.lists(FIELD_TEXT, min_size=n_cols, max_size=n_cols, unique=True))
    rows = draw(st.lists(st.lists(FIELD_TEXT, min_size=n_cols, max_size=n_cols), max_size=12))
    data = write_table([header, *rows], draw(st.sampled_from(["\n", "\r\n", "\r"])))
    if draw(st.booleans()):
        data = data.rstrip(b"\r\n")  # no final line break
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=csv_files(), chunk_rows=st.integers(1, 5), block_size=st.integers(1, 40))
def test_random_tables_round_trip_and_match_csv_module(data, chunk_rows, block_size):
    expected = csv_module_rows(data)
    reader, chunks = read_all(data, chunk_rows=chunk_rows, block_size=block_size)
    assert reassemble(reader, chunks) == data
    assert all_errors(chunks) == {}
    assert reader.columns == expected[0]
    assert parsed_rows(chunks) == expected[1:]
    for chunk in chunks:
        assert isinstance(chunk.frame, pd.DataFrame)
        assert list(chunk.frame.columns) == expected[0]


def test_quote_inside_unquoted_field_does_not_shift_other_records():
    # Even quote count, so the splitter keeps it one record, but the csv
    # module reads the second quote as opening a field that never closes.
    data = b'a,b\nx"y,"z\n1,"2"\n3,4\n'
    _, (chunk,) = read_all(data)
    assert list(chunk.errors) == [0]
    assert chunk.errors[0].startswith("line 2: column 'b': malformed quoted field")
    assert chunk.frame.to_numpy().tolist() == [["1", "2"], ["3", "4"]]


def test_a_named_pipe_output_is_written_through_not_replaced(tmp_path):
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)  # no hang on failure
    reader.start()
    with AtomicWriter(fifo) as f:
        f.write(b"a,b\n1,2\n")
    reader.join(timeout=10)
    assert received == [b"a,b\n1,2\n"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # still the pipe, not a file renamed onto it


def test_a_linked_output_replaces_the_file_the_link_points_to_and_keeps_its_mode(tmp_path):
    real, link = tmp_path / "real.csv", tmp_path / "link.csv"
    real.write_bytes(b"old\n")
    os.chmod(real, 0o600)
    link.symlink_to(real)
    with csvio.AtomicOutputs([link, tmp_path / "other.csv"]) as (a, b):
        a.write(b"new\n")
        b.write(b"x\n")
    assert link.is_symlink() and real.read_bytes() == b"new\n"
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o600


def test_minus_zero_reads_as_zero_whatever_the_cells_beside_it():
    from vaefilter.columns import TableSchema
    from vaefilter.io.texttypes import parse_text_table

    schema = TableSchema.fit(pd.DataFrame({"fare": [7.25, 0.0, 31.5]}))
    # a chunk of whole numbers takes pandas' integer path; beside a fraction, its float path
    alone, _ = parse_text_table(pd.DataFrame({"fare": ["-0", "3"]}), schema)
    beside_a_fraction, _ = parse_text_table(pd.DataFrame({"fare": ["-0", "7.5"]}), schema)
    assert not np.signbit(alone["fare"].iloc[0]) and not np.signbit(beside_a_fraction["fare"].iloc[0])

"""The row rule of ``features.records`` against a plain character-by-character reading of it.

The vectorised scanner must give the same rows as the rule read literally (a small state
machine written for clarity, not speed), on random text made of the characters that matter.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from features.records import segment, split_lines

LF, CR, QUOTE, COMMA = 10, 13, 34, 44
START, UNQUOTED, QUOTED, QUOTE_SEEN = range(4)


def reference_lines(data: bytes) -> list[tuple[int, int, int]]:
    lines, start, i = [], 0, 0
    while i < len(data):
        if data[i] == LF:
            lines.append((start, i, i + 1))
            start = i + 1
        elif data[i] == CR:
            after = i + 2 if i + 1 < len(data) and data[i + 1] == LF else i + 1
            lines.append((start, i, after))
            start = after
            i = after - 1
        i += 1
    if start < len(data):
        lines.append((start, len(data), len(data)))
    return lines


def reference_rows(
    data: bytes, width: int, max_lines: int, max_bytes: int
) -> tuple[list[tuple[int, int, bool]], list[int]]:
    """The rule of features.records, read literally: (rows as (first line, last line,
    malformed by text after a closing quote), broken lines)."""
    lines = reference_lines(data)
    rows: list[tuple[int, int, bool]] = []
    broken: list[int] = []
    first = 0
    while first < len(lines):
        start, end, _ = lines[first]
        if start == end:
            first += 1
            continue
        state, fields, clean, spanned, messy = START, 1, True, False, False
        line, pos, eof = first, start, False
        while True:
            if pos == lines[line][1]:  # end of the line's text
                if state == QUOTED:
                    spanned = True
                    line += 1
                    if line == len(lines):
                        eof = True
                        break
                    pos = lines[line][0]
                    continue
                break
            c = data[pos]
            if state == START:
                if c == QUOTE:
                    state, spanned = QUOTED, False
                elif c == COMMA:
                    fields += 1
                else:
                    state = UNQUOTED
            elif state == UNQUOTED:
                if c == COMMA:
                    fields += 1
                    state = START
            elif state == QUOTED:
                if c == QUOTE:
                    state = QUOTE_SEEN
            else:  # a quote inside a quoted field: escaped, or the closing one
                if c == QUOTE:
                    state = QUOTED
                else:
                    if spanned and c != COMMA:
                        clean = False
                    elif c != COMMA:
                        messy = True
                    if c == COMMA:
                        fields += 1
                        state = START
                    else:
                        state = UNQUOTED
            pos += 1
        if line == first and not eof:
            rows.append((first, first, messy))
            first += 1
            continue
        ok = (
            not eof
            and clean
            and line - first + 1 <= max_lines
            and lines[line][2] - start <= max_bytes
            and fields == width
        )
        if ok:
            rows.append((first, line, messy))
            first = line + 1
        else:
            broken.append(first)
            first += 1
    return rows, broken


def scan(data: bytes, width: int, max_lines: int, max_bytes: int):
    buf = np.frombuffer(data, dtype=np.uint8)
    lines = split_lines(buf, final=True)
    found = segment(buf, lines, COMMA, width, True, max_lines, max_bytes)
    rows = list(zip(found.first.tolist(), found.last.tolist(), found.messy.tolist(), strict=True))
    return lines, rows, found.broken.tolist(), found.consumed


csv_text = st.one_of(
    st.text(alphabet='ab,"\n\r ', max_size=60),
    # Denser in the structures that matter: quotes at field starts, escapes, line breaks.
    st.lists(
        st.sampled_from(["a", ",", '"', '""', '","', ',"', '",', '"b"c', "\n", "\r\n", "\r", " "]),
        max_size=30,
    ).map("".join),
).map(str.encode)


@settings(max_examples=3000, deadline=None)
@given(
    data=csv_text,
    width=st.integers(1, 4),
    max_lines=st.integers(2, 6),
    max_bytes=st.integers(4, 80),
)
def test_scanner_follows_the_rule(data: bytes, width: int, max_lines: int, max_bytes: int) -> None:
    lines, rows, broken, consumed = scan(data, width, max_lines, max_bytes)
    expected_lines = reference_lines(data)
    assert list(
        zip(lines.start.tolist(), lines.end.tolist(), lines.after.tolist(), strict=True)
    ) == (expected_lines)
    assert (rows, broken) == reference_rows(data, width, max_lines, max_bytes)
    assert consumed == len(expected_lines)


def test_a_stray_quote_loses_only_its_own_line() -> None:
    body = b"".join(
        b'a,"b\n' if i == 3 else b'a,"q, r"\n' if i % 7 == 0 else b"a,b\n" for i in range(50)
    )
    _, rows, broken, _ = scan(body, 2, 16, 1 << 20)
    assert broken == [3]
    assert len(rows) == 49 and all(first == last and not messy for first, last, messy in rows)


def test_quoted_line_breaks_make_one_row() -> None:
    body = b'a,"one\r\ntwo\rthree"\nb,c\n'
    _, rows, broken, _ = scan(body, 2, 16, 1 << 20)
    assert rows == [(0, 2, False), (3, 3, False)] and broken == []


def test_text_after_a_closing_quote_makes_the_row_malformed() -> None:
    _, rows, broken, _ = scan(b'a,"b"x\n"c",d\n5"6,7\n"",e\n""f,g\n', 2, 16, 1 << 20)
    assert rows == [(0, 0, True), (1, 1, False), (2, 2, False), (3, 3, False), (4, 4, True)]
    # On the last line of a multi-line row, after the field that spanned lines closed.
    data = b'a,"x\ny","b"c\na,"x\ny","b"\n'
    _, rows, broken, _ = scan(data, 3, 16, 1 << 20)
    assert rows == [(0, 1, True), (2, 3, False)] and broken == []
    assert reference_rows(data, 3, 16, 1 << 20) == (rows, broken)


def test_without_the_final_flag_an_open_quote_waits_for_more_data() -> None:
    data = b'a,b\nc,"d\ne'
    buf = np.frombuffer(data, dtype=np.uint8)
    lines = split_lines(buf, final=False)
    found = segment(buf, lines, COMMA, 2, False, 16, 1 << 20)
    assert found.first.tolist() == [0] and found.consumed == 1
    assert split_lines(np.frombuffer(b"a\r", dtype=np.uint8), final=False).start.tolist() == []


@settings(max_examples=500, deadline=None)
@given(body=csv_text, block_bytes=st.integers(1, 40))
def test_the_reader_counts_the_physical_lines_of_the_whole_file(
    body: bytes, block_bytes: int
) -> None:
    """``RowBlocks.lines_read`` (which ``features.incremental`` stores to number a later
    batch's lines as in one file) is the literal count of lines, header included, whatever
    the line ends, quotes and block boundaries."""
    import io

    from features.reader import RowBlocks, open_csv
    from features.schema import InputError

    data = b"a,b\n" + body
    try:
        stream = open_csv(io.BytesIO(data), "transactions")
    except InputError:  # a header and no rows: nothing is read, nothing stored
        return
    assert stream.blocks is not None
    blocks = RowBlocks(
        stream.blocks.stream,
        stream.blocks.rest,
        stream.header,
        stream.delimiter,
        "transactions",
        block_bytes=block_bytes,
    )
    assert blocks.lines_read is None
    for _ in blocks.batches():
        pass
    assert blocks.lines_read == len(reference_lines(data))

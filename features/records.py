"""Where each row of a CSV file starts and ends: the quoting rule, applied to raw bytes.

Every engine reads rows through this module, so they agree on what a row is (the rule is
stated in ``features/README.md``, "Rows and quoting"):

* a line ends at LF, CRLF or a lone CR;
* a field that *starts* with ``"`` is quoted: inside it ``""`` is a literal quote and line
  breaks are content, and the next single ``"`` ends it; a ``"`` anywhere else is text.
  The closing quote must be followed by the delimiter or the end of the line: a row with
  text between a closing quote and the next delimiter (``"a"b``) is malformed (Arrow would
  silently drop the quotes and keep ``ab``);
* a row is one line, unless a quoted field is still open at the line's end: then the row
  runs on to the line where that field closes. Such a row is accepted only if the closing
  quote is followed by the delimiter or the end of the line, the row spans at most
  ``MAX_RECORD_LINES`` lines and ``MAX_RECORD_BYTES`` bytes, and it has the header's
  number of fields. Otherwise only the line where the quote opened is rejected
  (``unterminated_quote``) and the next line starts a new row: one stray quote can never
  swallow the rest of the file;
* blank lines are not rows.

This is exactly the state machine of Arrow's CSV parser (which then splits the fields), so
each accepted row is one Arrow row. The work is vectorised with numpy over whole blocks;
Python only loops over the lines that leave a quote open (multi-line rows and stray
quotes), never over ordinary lines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.rules import MAX_RECORD_BYTES, MAX_RECORD_LINES

LF, CR, QUOTE = 10, 13, 34


@dataclass
class Lines:
    """Physical lines of a buffer: [start, end) is the text, ``after`` the next line's start."""

    start: np.ndarray  # int64
    end: np.ndarray  # int64, the terminator excluded
    after: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.start)


def split_lines(buf: np.ndarray, final: bool) -> Lines:
    """The complete lines of ``buf`` (uint8). Without ``final``, a trailing unterminated
    line is left out, and so is a CR that is the buffer's last byte (an LF may follow it)."""
    size = len(buf)
    lf = np.flatnonzero(buf == LF)
    cr = np.flatnonzero(buf == CR)
    if len(cr):
        # CRLF ends at its CR; a lone CR is a terminator of its own.
        crlf = np.zeros(len(lf), dtype=bool)
        has_before = lf > 0
        crlf[has_before] = buf[lf[has_before] - 1] == CR
        next_is_lf = np.zeros(len(cr), dtype=bool)
        inside = cr + 1 < size
        next_is_lf[inside] = buf[cr[inside] + 1] == LF
        lone = cr[~next_is_lf & (inside | final)]
        ends = np.concatenate([np.where(crlf, lf - 1, lf), lone])
        after = np.concatenate([lf + 1, lone + 1])
        order = np.argsort(ends, kind="stable")
        ends, after = ends[order], after[order]
    else:
        ends, after = lf, lf + 1
    start = np.empty(len(ends), dtype=np.int64)
    if len(ends):
        start[0] = 0
        start[1:] = after[:-1]
    last = int(after[-1]) if len(after) else 0
    if final and last < size:
        start = np.append(start, last)
        ends = np.append(ends, size)
        after = np.append(after, size)
    return Lines(start.astype(np.int64), ends.astype(np.int64), after.astype(np.int64))


@dataclass
class QuoteStats:
    """Per line, what the quote state machine does on it.

    ``opens``: starting outside any quoted field, the line ends inside one.
    ``has_odd``: the line holds a run of quotes of odd length (only these change the state).
    ``reopens``: starting inside a quoted field, the line ends inside one (again).
    ``closes_cleanly``: starting inside, the quote that closes the field is followed by
    the delimiter or the end of the line.
    ``messy_out`` / ``messy_in``: starting outside / inside, some other quote that closes a
    field on the line is followed by text (the row is malformed).
    """

    opens: np.ndarray
    has_odd: np.ndarray
    reopens: np.ndarray
    closes_cleanly: np.ndarray
    messy_out: np.ndarray
    messy_in: np.ndarray
    # Odd quote runs (position, length, line, state after the run in both start states).
    run_at: np.ndarray
    run_line: np.ndarray
    state_out: np.ndarray
    state_in: np.ndarray


def _alternate(block_start: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """1, 0, 1, 0 ... along each block of consecutive candidates (0 elsewhere)."""
    index = np.arange(len(candidates))
    first = np.maximum.accumulate(np.where(block_start, index, 0))
    return candidates & ((index - first) % 2 == 0)


def quote_stats(buf: np.ndarray, lines: Lines, delimiter: int, inside: bool = True) -> QuoteStats:
    """The state machine on every line at once (``inside=False``: only the facts for lines
    starting outside a quoted field, which is all a block without open quotes needs).

    Only odd-length runs of quotes change the state: an even run is escaped quotes (inside
    a quoted field) or an empty quoted field. Outside a field, an odd run opens one only if
    it starts the field (first on its line, or right after a delimiter); inside, any odd
    run closes it. So along a line the state after each odd run alternates 1, 0, 1, ... over
    consecutive field-starting runs and drops to 0 at any other run.
    """
    n = len(lines)
    quotes = np.flatnonzero(buf[: int(lines.end[-1]) if n else 0] == QUOTE)
    empty = np.zeros(n, dtype=bool)
    if not len(quotes):
        none = np.zeros(0, dtype=np.int64)
        return QuoteStats(empty, empty, empty, empty, empty, empty, none, none, none, none)
    new_run = np.ones(len(quotes), dtype=bool)
    new_run[1:] = quotes[1:] != quotes[:-1] + 1
    run_index = np.flatnonzero(new_run)
    length = np.diff(np.append(run_index, len(quotes)))
    odd = length % 2 == 1
    at = quotes[run_index][odd]
    run_end = at + length[odd]
    line = np.searchsorted(lines.start, at, side="right") - 1
    starts_field = at == lines.start[line]
    after_delimiter = ~starts_field
    after_delimiter[after_delimiter] = buf[at[after_delimiter] - 1] == delimiter
    starts_field |= after_delimiter

    first_on_line = np.ones(len(at), dtype=bool)
    first_on_line[1:] = line[1:] != line[:-1]
    last_on_line = np.ones(len(at), dtype=bool)
    last_on_line[:-1] = line[1:] != line[:-1]
    previous_starts = np.zeros(len(at), dtype=bool)
    previous_starts[1:] = starts_field[:-1]
    # Starting outside: a line start breaks the alternation.
    state_out = _alternate(starts_field & (first_on_line | ~previous_starts), starts_field)
    # Starting inside: the line's first odd run closes the field, then as above.
    state_in = np.zeros(len(at), dtype=bool)
    if inside:
        previous_first = np.zeros(len(at), dtype=bool)
        previous_first[1:] = first_on_line[:-1]
        candidates = starts_field & ~first_on_line
        state_in = _alternate(candidates & (previous_first | ~previous_starts), candidates)

    has_odd = np.zeros(n, dtype=bool)
    has_odd[line] = True
    opens = np.zeros(n, dtype=bool)
    opens[line[last_on_line]] = state_out[last_on_line]
    reopens = ~has_odd
    reopens[line[last_on_line]] = state_in[last_on_line]
    # A run closes cleanly if the delimiter or the end of the line follows it.
    clean = run_end == lines.end[line]
    not_last = ~clean
    clean[not_last] = buf[run_end[not_last]] == delimiter
    closes_cleanly = np.zeros(n, dtype=bool)
    closes_cleanly[line[first_on_line]] = clean[first_on_line]
    # Other closing runs: the state drops from 1 to 0 along the same line.
    was_open_out = np.zeros(len(at), dtype=bool)
    was_open_out[1:] = state_out[:-1] & ~first_on_line[1:]
    messy_out = np.zeros(n, dtype=bool)
    messy_out[line[was_open_out & ~clean]] = True
    messy_in = np.zeros(n, dtype=bool)
    if inside:
        was_open_in = np.zeros(len(at), dtype=bool)
        was_open_in[1:] = state_in[:-1] & ~first_on_line[1:]
        messy_in[line[was_open_in & ~clean]] = True
    # An even run that starts a field outside a quoted field opens and closes one ("" or
    # """"): it too must be followed by the delimiter or the end of the line.
    even = ~odd
    if even.any():
        e_at = quotes[run_index][even]
        e_end = e_at + length[even]
        e_line = np.searchsorted(lines.start, e_at, side="right") - 1
        e_starts = e_at == lines.start[e_line]
        e_starts[~e_starts] = buf[e_at[~e_starts] - 1] == delimiter
        e_clean = e_end == lines.end[e_line]
        e_clean[~e_clean] = buf[e_end[~e_clean]] == delimiter
        before = np.searchsorted(at, e_at, side="right") - 1
        same = before >= 0
        same[same] = line[before[same]] == e_line[same]
        open_out = np.zeros(len(e_at), dtype=bool)
        open_in = np.ones(len(e_at), dtype=bool)
        open_out[same] = state_out[before[same]]
        open_in[same] = state_in[before[same]]
        outside_out, outside_in = ~open_out, ~open_in
        bad = e_starts & ~e_clean
        messy_out[e_line[bad & outside_out]] = True
        messy_in[e_line[bad & outside_in]] = True
    return QuoteStats(
        opens, has_odd, reopens, closes_cleanly, messy_out, messy_in, at, line, state_out, state_in
    )


def delimiter_counts(
    buf: np.ndarray, lines: Lines, stats: QuoteStats, delimiter: int
) -> tuple[np.ndarray, np.ndarray]:
    """Delimiters outside quoted fields on each line, starting outside and starting inside."""
    n = len(lines)
    positions = np.flatnonzero(buf[: int(lines.end[-1])] == delimiter)
    line = np.searchsorted(lines.start, positions, side="right") - 1
    before = np.searchsorted(stats.run_at, positions, side="right") - 1
    same_line = before >= 0
    same_line[same_line] = stats.run_line[before[same_line]] == line[same_line]
    inside_out = np.zeros(len(positions), dtype=bool)
    inside_in = ~same_line
    inside_out[same_line] = stats.state_out[before[same_line]]
    inside_in[same_line] = stats.state_in[before[same_line]]
    out = np.bincount(line[~inside_out], minlength=n)
    into = np.bincount(line[~inside_in], minlength=n)
    return out, into


@dataclass
class LineFacts:
    """What the walk over stray and multi-line quotes needs to know about each line.

    ``number`` is ascending; the lines must be contiguous from each opener over the next
    ``max_lines`` lines (the Spark engine passes only those lines, gathered to the driver).
    """

    number: np.ndarray  # line numbers (any origin)
    size: np.ndarray  # bytes, line break included
    opens: np.ndarray
    has_odd: np.ndarray
    reopens: np.ndarray
    closes_cleanly: np.ndarray
    messy_out: np.ndarray
    messy_in: np.ndarray
    fields_out: np.ndarray  # delimiters outside quoted fields, starting outside
    fields_in: np.ndarray  # the same, starting inside


@dataclass
class Walk:
    """Positions (into ``LineFacts``) of accepted multi-line rows and of rejected lines."""

    first: list[int]
    last: list[int]
    messy: list[bool]
    broken: list[int]
    stop: int | None  # position where more data is needed (None: all decided)


def walk(
    facts: LineFacts,
    width: int,
    final: bool,
    max_lines: int = MAX_RECORD_LINES,
    max_bytes: int = MAX_RECORD_BYTES,
) -> Walk:
    """Decide each line that leaves a quote open: the start of a multi-line row, or a stray
    quote (module doc). Python loops here only over such lines."""
    odd = np.flatnonzero(facts.has_odd)
    cumulative = np.concatenate([[0], np.cumsum(facts.size)])
    number = facts.number
    found = Walk([], [], [], [], None)
    resume = 0
    for opener in np.flatnonzero(facts.opens).tolist():
        if opener < resume:
            continue  # inside a row accepted above
        fields = int(facts.fields_out[opener])
        messy = bool(facts.messy_out[opener])
        at = opener
        verdict = "broken"
        while True:
            k = int(np.searchsorted(odd, at, side="right"))
            if k == len(odd):
                too_long = number[-1] - number[opener] + 1 >= max_lines or (
                    cumulative[-1] - cumulative[opener] > max_bytes
                )
                verdict = "broken" if final or too_long else "wait"
                break
            closer = int(odd[k])
            if (
                number[closer] - number[opener] + 1 > max_lines
                or cumulative[closer + 1] - cumulative[opener] > max_bytes
                or not facts.closes_cleanly[closer]
            ):
                break
            fields += int(facts.fields_in[closer])
            messy |= bool(facts.messy_in[closer])
            if facts.reopens[closer]:
                at = closer
                continue
            if fields + 1 == width:
                verdict = "row"
            break
        if verdict == "wait":
            found.stop = opener
            break
        if verdict == "row":
            found.first.append(opener)
            found.last.append(closer)
            found.messy.append(messy)
            resume = closer + 1
        else:
            found.broken.append(opener)
            resume = opener + 1
    return found


def line_facts(
    buf: np.ndarray, lines: Lines, delimiter: int, stats: QuoteStats | None = None
) -> LineFacts:
    """``LineFacts`` for every line of a buffer (line numbers from 0)."""
    stats = stats or quote_stats(buf, lines, delimiter)
    fields_out, fields_in = delimiter_counts(buf, lines, stats, delimiter)
    return LineFacts(
        number=np.arange(len(lines)),
        size=lines.after - lines.start,
        opens=stats.opens,
        has_odd=stats.has_odd,
        reopens=stats.reopens,
        closes_cleanly=stats.closes_cleanly,
        messy_out=stats.messy_out,
        messy_in=stats.messy_in,
        fields_out=fields_out,
        fields_in=fields_in,
    )


@dataclass
class Segments:
    """Rows found in a buffer, as line ranges, and the lines rejected on their own."""

    first: np.ndarray  # line index where each row starts (file order)
    last: np.ndarray  # line index where it ends
    messy: np.ndarray  # the row has a quote closed and followed by text (malformed)
    broken: np.ndarray  # lines rejected as unterminated_quote
    consumed: int  # lines dealt with; the rest wait for more data


def segment(
    buf: np.ndarray,
    lines: Lines,
    delimiter: int,
    width: int,
    final: bool,
    max_lines: int = MAX_RECORD_LINES,
    max_bytes: int = MAX_RECORD_BYTES,
) -> Segments:
    """Group lines into rows under the quoting rule (module doc). Blank lines are skipped."""
    n = len(lines)
    blank = lines.start == lines.end
    stats = quote_stats(buf, lines, delimiter, inside=False)
    if stats.opens.any():
        stats = quote_stats(buf, lines, delimiter)
    else:
        single = np.flatnonzero(~blank)
        return Segments(single, single, stats.messy_out[single], np.zeros(0, dtype=np.int64), n)
    found = walk(line_facts(buf, lines, delimiter, stats), width, final, max_lines, max_bytes)
    return rows_from_walk(found, blank, stats.messy_out, n)


def rows_from_walk(found: Walk, blank: np.ndarray, messy_out: np.ndarray, n: int) -> Segments:
    """Every row (single-line and multi-line, in order) from the walk's decisions."""
    stop = n if found.stop is None else found.stop
    starts_row = ~blank
    for first, last in zip(found.first, found.last, strict=True):
        starts_row[first + 1 : last + 1] = False
    starts_row[found.broken] = False
    starts_row[stop:] = False
    first = np.flatnonzero(starts_row)
    last = first.copy()
    messy = messy_out[first]
    if found.first:
        where = np.searchsorted(first, np.array(found.first))
        last[where] = found.last
        messy[where] = found.messy
    return Segments(first, last, messy, np.array(found.broken, dtype=np.int64), stop)

"""What an engine counts while it reads, and what the transactions file looked like.

Every engine (pandas, Spark, the DuckDB reference) fills one ``Tally`` and one
``InputShape``; the report is built from them and nothing else engine-specific.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from features.rules import EXAMPLES_PER_CHECK, RuleCode
from features.schema import ColumnMap


@dataclass
class Tally:
    """Row counts, the count and first examples per rule, and the latest used timestamp."""

    rows_in: int = 0
    rows_used: int = 0
    rows_duplicate: int = 0
    counts: dict[RuleCode, int] = field(default_factory=dict)
    examples: dict[RuleCode, list[str]] = field(default_factory=dict)
    as_of_ts: int | None = None  # UK wall-clock epoch seconds of the latest used row

    def add(self, code: RuleCode, count: int, examples: list[str]) -> None:
        code = RuleCode(code)
        self.counts[code] = self.counts.get(code, 0) + count
        kept = self.examples.setdefault(code, [])
        kept.extend(examples[: EXAMPLES_PER_CHECK - len(kept)])

    def count(self, code: RuleCode) -> int:
        return self.counts.get(code, 0)


@dataclass(frozen=True)
class InputShape:
    """The transactions file's header as read: its columns, which input column each
    canonical column came from, the columns not used, and the delimiter."""

    columns: tuple[str, ...]
    mapped: dict[str, str]
    extra_columns: tuple[str, ...]
    delimiter: str

    @classmethod
    def from_header(cls, header: list[str], delimiter: str, columns: ColumnMap) -> InputShape:
        return cls(
            columns=tuple(header),
            mapped={c: header[p] for c, p in columns.positions.items()},
            extra_columns=tuple(columns.extra),
            delimiter=delimiter,
        )

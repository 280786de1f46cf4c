"""Description text: one normalisation rule and one lexicon of merchant categories.

Matching is on whole words of the normalised text, so "PARENTPAY" and "RENTOKIL" are not
rent and "CURRENT ACCOUNT" is not rent either, while "RENT FEB" and "STANDING ORDER RENT"
are. Work is done once per distinct description, never per row: normalised in Arrow (Python
only for non-ASCII text) and matched with one RE2 pass per category over the distinct
normalised texts.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: the API reads only the lexicon's categories
    import numpy as np
    import pandas as pd
    import pyarrow as pa

LEXICON_PATH = Path(__file__).with_name("lexicon.json")
# Anything that is not a letter (punctuation, digits, underscore, whitespace) becomes a space.
NON_LETTERS = re.compile(r"[\W\d_]+")


def normalise(text: str | None) -> str:
    """Lowercase, digits and punctuation removed, whitespace collapsed."""
    if not text:
        return ""
    return NON_LETTERS.sub(" ", text.lower()).strip()


@cache
def load_lexicon(path: Path = LEXICON_PATH) -> dict[str, tuple[str, ...]]:
    """Category -> phrases, each phrase already in normalised form."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    lexicon = {}
    for category, phrases in raw.items():
        if category.startswith("_"):
            continue
        cleaned = tuple(sorted({normalise(p) for p in phrases} - {""}))
        lexicon[category] = cleaned
    return lexicon


CATEGORIES: tuple[str, ...] = tuple(load_lexicon())


def category_pattern(phrases: tuple[str, ...]) -> str:
    """Regex matching any phrase as whole words of a normalised description.

    Normalised text has single spaces between words, so a word boundary is a space or an
    end of the string. Engines (pandas ``re``, Spark Java regex) share this pattern.
    """
    alternatives = "|".join(re.escape(p).replace(r"\ ", " ") for p in phrases)
    return rf"(?:^| )(?:{alternatives})(?: |$)"


def categorise(normalised: pd.Series) -> pd.DataFrame:
    """One boolean column ``is_<category>`` per lexicon category."""
    import pandas as pd
    import pyarrow as pa

    clean = pa.array(normalised.astype(object), pa.string(), from_pandas=True)
    flags = category_flags(clean)
    return pd.DataFrame({f"is_{c}": f for c, f in flags.items()}, index=normalised.index)


def normalise_all(values: pa.Array) -> pa.Array:
    """``normalise`` of every value (null: ``""``), in Arrow.

    For ASCII text ``[\\W\\d_]`` is exactly "not a letter", so Arrow's lowercase and one
    RE2 replacement give the same text; other text (rare) goes through ``normalise`` itself,
    because Python's Unicode rules for letters, digits and lowercase are not RE2's.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    values = pc.fill_null(values, "")
    clean = pc.utf8_trim(pc.replace_substring_regex(pc.ascii_lower(values), "[^a-z]+", " "), " ")
    ascii_only = np.asarray(pc.string_is_ascii(values))
    if not ascii_only.all():
        rows = np.flatnonzero(~ascii_only)
        others = [normalise(v) for v in values.take(pa.array(rows)).to_pylist()]
        clean = pc.replace_with_mask(clean, pa.array(~ascii_only), pa.array(others, pa.string()))
    return clean


def category_flags(clean: pa.Array) -> dict[str, np.ndarray]:
    """``category -> bool per value`` for normalised text: one RE2 pass per category, over
    the distinct values only (``category_pattern`` is the rule every engine runs)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(clean)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    codes = np.asarray(encoded.indices)
    return {
        category: np.asarray(
            pc.match_substring_regex(encoded.dictionary, category_pattern(phrases))
        )[codes]
        for category, phrases in load_lexicon().items()
    }


def describe_distinct(descriptions: pa.Array) -> tuple[np.ndarray, pd.DataFrame]:
    """Normalise and categorise each distinct description once.

    Returns (code per row, one row per distinct description with ``description_clean`` and
    the ``is_<category>`` flags); row i's flags are ``table.iloc[codes[i]]``.
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(pc.fill_null(descriptions, ""))
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    clean = normalise_all(encoded.dictionary)
    table = pd.DataFrame({f"is_{c}": f for c, f in category_flags(clean).items()})
    table.insert(0, "description_clean", clean.to_numpy(zero_copy_only=False))
    return np.asarray(encoded.indices), table


def describe(descriptions: pd.Series) -> pd.DataFrame:
    """``describe_distinct`` expanded back to one row per input row."""
    import pyarrow as pa

    values = pa.array(descriptions.astype(object).where(descriptions.notna(), None), pa.string())
    codes, table = describe_distinct(values)
    out = table.iloc[codes].reset_index(drop=True)
    out.index = descriptions.index
    return out

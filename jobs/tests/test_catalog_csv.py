"""The CSV format, property-based: what export writes, import reads back; one bad row refuses the file."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs import catalog_csv
from jobs.tests.conftest import csv_bytes

# Text a spreadsheet could hold: any characters but NUL (line breaks too), without blanks at the ends.
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=60).map(str.strip)
# The same on one line, so that a record's line number is its position in the file.
one_line = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=60).map(str.strip)
slugs = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,30}", fullmatch=True)
prices = st.decimals(min_value=0, max_value=Decimal("99999999.99"), places=2, allow_nan=False, allow_infinity=False)


def product_rows(text: st.SearchStrategy[str]) -> st.SearchStrategy[list[tuple]]:
    return st.lists(
        st.tuples(text.filter(bool), slugs, slugs, prices, st.integers(0, 2**31 - 1), text),
        min_size=1,
        max_size=30,
        unique_by=lambda row: row[1],
    )


def as_exported(rows: list[tuple]) -> list[tuple]:
    """The rows with their text cells as the export writes them (formulas neutralised)."""
    n = catalog_csv.neutralise
    return [
        (n(name), n(slug), n(category), price, stock, n(description))
        for name, slug, category, price, stock, description in rows
    ]


@given(product_rows(text))
def test_every_valid_row_is_read_back_as_written(written):
    parsed = catalog_csv.parse(csv_bytes(as_exported(written)))
    assert [(r.name, r.slug, r.category, r.price, r.stock, r.description) for r in parsed] == written


FORMULA_STARTS = st.sampled_from(["=", "+", "-", "@", "\t", "\r", "'", "''", "'=", "''-", "a", " "])
formula_like = st.builds(str.__add__, FORMULA_STARTS, st.text(max_size=20))


@given(formula_like | st.text(max_size=20))
def test_no_exported_cell_starts_a_formula_and_the_import_takes_off_exactly_the_added_quote(value):
    exported = catalog_csv.neutralise(value)
    assert not exported.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert catalog_csv.restore(exported) == value


BAD_VALUES = {
    "name": ["", "x" * 201, "bad\x00name"],
    "slug": ["", "two words", "ß-not-ascii", "s" * 221],
    "category": ["", "two words"],
    "price": ["", "abc", "-0.01", "1.001", "NaN", "Infinity", "100000000"],
    "stock": ["-1", "1.5", "lots", "2147483648"],
    "description": ["d" * 10_001],
}
COLUMN = {name: index for index, name in enumerate(catalog_csv.COLUMNS)}


@given(product_rows(one_line), st.data())
def test_one_bad_value_anywhere_refuses_the_whole_file_and_names_its_line(written, data):
    column = data.draw(st.sampled_from(sorted(BAD_VALUES)))
    value = data.draw(st.sampled_from(BAD_VALUES[column]))
    position = data.draw(st.integers(0, len(written) - 1))
    bad = list(written[position])
    bad[COLUMN[column]] = value
    if column == "slug" and value:
        assert value not in {row[1] for row in written}
    rows_with_bad = [*written[:position], tuple(bad), *written[position + 1 :]]
    with pytest.raises(catalog_csv.FileRefused) as refused:
        catalog_csv.parse(csv_bytes(rows_with_bad))
    assert refused.value.bad_row_count == 1
    (listed,) = refused.value.bad_rows
    assert listed["line"] == position + 2  # after the header, one line per record
    assert column in listed["reason"]


@given(st.binary(min_size=1, max_size=200))
def test_any_bytes_are_either_parsed_or_refused_with_a_message(data):
    try:
        catalog_csv.parse(b"name,slug,category,price,stock,description\n" + data)
    except catalog_csv.FileRefused as refused:
        assert refused.message

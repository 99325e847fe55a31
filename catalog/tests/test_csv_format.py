"""The CSV format, property-based: what export writes, import reads back; one bad row refuses the file."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from catalog import csv_format
from jobs.tests.conftest import csv_bytes

# Text a spreadsheet could hold: any characters but NUL (line breaks too), without blanks at the ends.
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=60).map(str.strip)
# The same on one line, so that a record's line number is its position in the file.
one_line = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=60).map(str.strip)
# Text that spans lines, ended in any of the three ways a line can end.
multi_line = st.builds(
    lambda parts, end: end.join(parts).strip(),
    st.lists(one_line, min_size=2, max_size=4),
    st.sampled_from(["\n", "\r\n", "\r"]),
)
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
    n = csv_format.neutralise
    return [
        (n(name), n(slug), n(category), price, stock, n(description))
        for name, slug, category, price, stock, description in rows
    ]


@given(product_rows(text))
def test_every_valid_row_is_read_back_as_written(written):
    parsed = csv_format.parse(csv_bytes(as_exported(written)))
    assert [(r.name, r.slug, r.category, r.price, r.stock, r.description) for r in parsed] == written


FORMULA_STARTS = st.sampled_from(["=", "+", "-", "@", "\t", "\r", "'", "''", "'=", "''-", "a", " "])
formula_like = st.builds(str.__add__, FORMULA_STARTS, st.text(max_size=20))


@given(formula_like | st.text(max_size=20))
def test_no_exported_cell_starts_a_formula_and_the_import_takes_off_exactly_the_added_quote(value):
    exported = csv_format.neutralise(value)
    assert not exported.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert csv_format.restore(exported) == value


BAD_VALUES = {
    "name": ["", "x" * 201, "bad\x00name"],
    "slug": ["", "two words", "ß-not-ascii", "s" * 221],
    "category": ["", "two words"],
    "price": ["", "abc", "-0.01", "1.001", "NaN", "Infinity", "100000000"],
    "stock": ["-1", "1.5", "lots", "2147483648"],
    "description": ["d" * 10_001],
}
COLUMN = {name: index for index, name in enumerate(csv_format.COLUMNS)}


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
    with pytest.raises(csv_format.FileRefused) as refused:
        csv_format.parse(csv_bytes(rows_with_bad))
    assert refused.value.bad_row_count == 1
    (listed,) = refused.value.bad_rows
    assert listed["line"] == position + 2  # after the header, one line per record
    assert column in listed["reason"]


@given(st.binary(min_size=1, max_size=200))
def test_any_bytes_are_either_parsed_or_refused_with_a_message(data):
    try:
        csv_format.parse(b"name,slug,category,price,stock,description\n" + data)
    except csv_format.FileRefused as refused:
        assert refused.message


def lines_spanned(row: tuple) -> int:
    return 1 + sum(len(re.findall(r"\r\n|\r|\n", str(value))) for value in row)


@given(product_rows(st.one_of(one_line, multi_line)), st.data())
def test_bad_rows_are_named_by_the_line_they_start_on_after_records_that_span_lines(written, data):
    bad_positions = sorted(data.draw(st.sets(st.integers(0, len(written) - 1), min_size=1)))
    rows = [(*row[:3], "cheap", *row[4:]) if n in bad_positions else row for n, row in enumerate(written)]
    with pytest.raises(csv_format.FileRefused) as refused:
        csv_format.parse(csv_bytes(rows))
    first_lines = [2 + sum(lines_spanned(row) for row in written[:n]) for n in bad_positions]
    assert [listed["line"] for listed in refused.value.bad_rows] == first_lines


def test_a_record_that_spans_lines_is_reported_on_its_first_line_and_the_rows_after_it_on_theirs():
    data = (
        b"name,slug,category,price,stock,description\r\n"
        b'"Lamp\r\nwith a\r\nlong name",lamp,lamps,cheap,1,\r\n'  # lines 2 to 4
        b"\r\n"  # line 5, blank
        b'Rug,rug,rugs,10,1,"Soft\nand warm"\r\n'  # lines 6 and 7
        b"Mat,mat,mats,10,lots,\r\n"  # line 8
    )
    with pytest.raises(csv_format.FileRefused) as refused:
        csv_format.parse(data)
    assert [listed["line"] for listed in refused.value.bad_rows] == [2, 8]


def test_lines_ended_by_a_lone_carriage_return_count_as_lines_everywhere():
    header = "name,slug,category,price,stock,description\r"
    rows = "".join(f"Lamp {n},lamp-{n},lamps,1,1,\r" for n in range(2500))
    reports = []
    csv_format.parse((header + rows).encode(), report=lambda done, total: reports.append((done, total)))
    assert reports and all(done <= total == 2502 for done, total in reports)

    with pytest.raises(csv_format.FileRefused) as refused:
        csv_format.parse((header + "Lamp,lamp,lamps,1,1,\r").encode() + b"Bad \xff byte,bad,lamps,1,1,\r")
    assert "line 3 " in refused.value.message

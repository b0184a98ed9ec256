"""The translate task: dates written by hand-checked rules, disjoint date splits, the alignment."""

from __future__ import annotations

import datetime

import numpy as np
import pytest

from tinyattn import data

MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september",
          "october", "november", "december"]

DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_UNITS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth"]
ORDINALS = (_UNITS + ["tenth", "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth",
                      "seventeenth", "eighteenth", "nineteenth", "twentieth"]
            + ["twenty-" + u for u in _UNITS] + ["thirtieth", "thirty-first"])
SUFFIX = {d: "th" for d in range(1, 32)} | {1: "st", 2: "nd", 3: "rd", 21: "st", 22: "nd", 23: "rd", 31: "st"}


def zeller_weekday(d: datetime.date) -> str:
    """Day of the week by Zeller's congruence (independent of datetime.weekday)."""
    m, y = (d.month + 12, d.year - 1) if d.month < 3 else (d.month, d.year)
    h = (d.day + 13 * (m + 1) // 5 + y % 100 + (y % 100) // 4 + (y // 100) // 4 + 5 * (y // 100)) % 7
    return ["saturday", "sunday", "monday", "tuesday", "wednesday", "thursday", "friday"][h]


@pytest.fixture(scope="module")
def splits():
    return data.date_splits(3000, 300, 400, seed=5)


def test_the_issues_examples_by_hand():
    d = datetime.date(2026, 11, 29)
    written = {f: data.format_date(d, f)[0] for f in data.DATE_FORMATS}
    assert written["weekday_the_dth_of"] == "sunday, the 29th of november 2026"
    assert written["day_mon_yy"] == "29 nov 26"
    assert written["month_words"] == "november twenty-ninth, 2026"
    assert written["us_slash"] == "11/29/2026"
    assert written["eu_dots"] == "29.11.2026"
    assert data.format_date(datetime.date(1999, 3, 1), "month_words")[0] == "march first, 1999"
    assert data.format_date(datetime.date(2001, 1, 2), "us_slash")[0] == "1/2/2001"
    assert data.format_date(datetime.date(2012, 5, 30), "the_words_of_month")[0] == "the thirtieth of may 2012"
    assert data.format_date(datetime.date(2012, 5, 22), "mon_dth_year")[0] == "may 22nd, 2012"
    assert data.format_date(datetime.date(2012, 5, 13), "mon_dth_year")[0] == "may 13th, 2012"
    assert data.format_date(datetime.date(1951, 7, 4), "day_mon_yy") == ("4 jul 51", {"day": (0, 1), "month": (2, 5), "year": (6, 8)})
    assert data.format_date(d, "weekday_month_day") == (
        "sunday, november 29, 2026", {"month": (8, 16), "day": (17, 19), "year": (21, 25)})


def test_every_example_says_its_date(splits):
    """Read each source back with the spans: the year, month and day written there are the
    target's, and a weekday, when written, is the date's (by Zeller's congruence)."""
    for split in splits:
        for i in range(len(split)):
            text, target, date = split.sources[i], split.targets[i], split.dates[i]
            assert target == f"{date.year:04d}-{date.month:02d}-{date.day:02d}"
            year, month, day = (text[slice(*split.spans[i][j])] for j in (0, 5, 8))
            assert year in (str(date.year), f"{date.year % 100:02d}")
            assert month in (str(date.month), f"{date.month:02d}", MONTHS[date.month - 1], MONTHS[date.month - 1][:3])
            assert day in (str(date.day), f"{date.day:02d}", str(date.day) + SUFFIX[date.day], ORDINALS[date.day - 1])
            weekday = zeller_weekday(date)
            if split.formats[i].startswith("weekday"):
                assert text.split(",")[0] == weekday, (text, weekday)
            elif split.formats[i].startswith("wkd"):
                assert text.split()[0] == weekday[:3], (text, weekday)
            else:
                assert not any(text.startswith(w[:3]) for w in DAYS), text
            assert split.spans[i][4].tolist() == [0, 0] and split.spans[i][7].tolist() == [0, 0]


def test_two_digit_years_and_range(splits):
    for split in splits:
        for d, f, text in zip(split.dates, split.formats, split.sources):
            assert datetime.date(1950, 1, 1) <= d <= datetime.date(2049, 12, 31)
            if f == "day_mon_yy":
                yy = int(text.split()[-1])
                assert d.year == (1900 + yy if yy >= 50 else 2000 + yy)


def test_splits_are_disjoint_in_the_date_and_deterministic(splits):
    train, val, test = splits
    assert not set(train.dates) & set(test.dates)
    assert not set(train.dates) & set(val.dates)
    assert not set(val.dates) & set(test.dates)
    assert len(set(test.dates)) == len(test) == 400 and len(set(val.dates)) == 300
    again = data.date_splits(3000, 300, 400, seed=5)
    assert again[2].sources == test.sources and np.array_equal(again[0].src, train.src)
    other = data.date_splits(3000, 300, 400, seed=6)
    assert other[2].dates != test.dates
    assert set(train.formats) == set(data.DATE_FORMATS)  # every format is used
    assert max(len(s) for s in train.sources) <= 40


def test_ids_round_trip_and_padding(splits):
    train = splits[0]
    for i in range(50):
        row = train.src[i]
        n = len(train.sources[i])
        assert "".join(data.SRC_VOCAB[k] for k in row[:n]) == train.sources[i]
        assert np.all(row[n:] == data.PAD)
        assert train.tgt[i, 0] == data.BOS and train.tgt[i, -1] == data.EOS
        assert data.decode_target(train.tgt[i]) == train.targets[i]
    assert data.decode_target([data.BOS, 5, 6, data.EOS, 7]) == "23"


def test_unknown_characters_are_listed():
    with pytest.raises(ValueError, match=r"unknown source characters \['!', 'N'\] \(e.g. in 'Nov 29!'\)"):
        data.encode_source(["29 nov 26", "Nov 29!"])
    with pytest.raises(ValueError, match="unknown date format 'roman'"):
        data.format_date(datetime.date(2000, 1, 1), "roman")


def test_alignment_matrix(splits):
    test = splits[2]
    for i in range(20):
        a = data.alignment_matrix(test, i)
        assert a.shape == (10, len(test.sources[i]))
        np.testing.assert_allclose(a.sum(axis=1), [1, 1, 1, 1, 0, 1, 1, 0, 1, 1])
        start, end = test.spans[i][0]
        assert np.all(a[0, start:end] == 1 / (end - start))

"""Working days across the State Council's holidays: the library's years (2025, 2026), a year the
county entered (2027), weekends alone (provisional) for a year nobody knows, refusal of bad schedules."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.law import facts, workdays
from sync.law.clock import add_working_days, is_workday
from sync.law.errors import RuleError
from sync.law.workdays import ScheduleError, WorkCalendar

D = dt.date
#: A 2027 schedule as the county would enter it (New Year, Spring Festival with two make-up Saturdays/Sundays).
SCHEDULE_2027 = {"holidays": ["2027-01-01", "2027-02-05", "2027-02-08", "2027-02-09", "2027-02-10", "2027-02-11",
                              "2027-02-12"],
                 "workdays": ["2027-02-07", "2027-02-20"]}
CAL = WorkCalendar.of({2027: SCHEDULE_2027})
LIB = workdays.LIBRARY_ONLY


def test_spring_festival_2025_from_the_library():
    # 2025: 28 Jan - 4 Feb off; Sunday 26 Jan and Saturday 8 Feb worked.
    assert LIB.source(2025) == "library" and not LIB.provisional(D(2025, 1, 27))
    assert LIB.is_workday(D(2025, 1, 26)) and not LIB.is_workday(D(2025, 1, 28))
    assert LIB.add_working_days(D(2025, 1, 27), 1) == D(2025, 2, 5)
    assert LIB.add_working_days(D(2025, 1, 27), 4) == D(2025, 2, 8)       # the make-up Saturday counts
    assert LIB.add_working_days(D(2025, 1, 27), 5) == D(2025, 2, 10)
    assert LIB.working_days_between(D(2025, 1, 27), D(2025, 2, 10)) == 5


def test_national_day_2025_and_2026_from_the_library():
    # 2025: 1-8 Oct off, Saturday 11 Oct worked; 2026: 1-7 Oct off, Saturday 10 Oct worked.
    assert LIB.add_working_days(D(2025, 9, 30), 1) == D(2025, 10, 9)
    assert LIB.add_working_days(D(2025, 9, 30), 3) == D(2025, 10, 11)
    assert LIB.add_working_days(D(2026, 9, 30), 1) == D(2026, 10, 8)
    assert LIB.add_working_days(D(2026, 9, 30), 3) == D(2026, 10, 10)
    assert LIB.working_days_between(D(2026, 9, 30), D(2026, 10, 10)) == 3


def test_spring_festival_2026_from_the_library():
    # 2026: 15-23 Feb off; Saturdays 14 and 28 Feb worked.
    assert LIB.add_working_days(D(2026, 2, 12), 2) == D(2026, 2, 14)
    assert LIB.add_working_days(D(2026, 2, 13), 2) == D(2026, 2, 24)
    assert LIB.working_days_between(D(2026, 2, 13), D(2026, 2, 28)) == 6


def test_2027_from_the_entered_schedule_is_not_provisional():
    assert CAL.source(2027) == "county" and not CAL.provisional((D(2026, 12, 20), D(2027, 3, 1)))
    assert not CAL.is_workday(D(2027, 1, 1))                                  # New Year, a Friday
    assert CAL.add_working_days(D(2026, 12, 31), 1) == D(2027, 1, 4)
    assert CAL.add_working_days(D(2027, 2, 4), 1) == D(2027, 2, 7)            # the make-up Sunday
    assert CAL.add_working_days(D(2027, 2, 4), 2) == D(2027, 2, 15)
    assert CAL.working_days_between(D(2027, 2, 4), D(2027, 2, 21)) == 7       # 7, 15-19, 20
    assert CAL.working_days_between(D(2027, 2, 21), D(2027, 2, 4)) == -7


def test_a_year_nobody_knows_counts_weekends_and_is_provisional():
    year = next(y for y in range(2027, 2100) if not workdays.library_knows(y))
    first = D(year, 1, 1)
    assert LIB.source(year) == "weekends" and LIB.provisional(first) and LIB.provisional((D(year - 1, 12, 1), first))
    assert LIB.is_workday(first) == (first.weekday() < 5)
    assert LIB.promised_provisional(f"{year - 1}-12-01T10:00:00+08:00", first.isoformat())
    assert not LIB.promised_provisional("2025-01-27T10:00:00+08:00", "")       # no promised date: nothing to mark
    assert LIB.schedule(year) == {"year": year, "source": "weekends", "provisional": True, "holidays": [],
                                  "workdays": []}
    # The county entering the year wins over weekends (and over the library for a known year).
    entered = WorkCalendar.of({year: {"holidays": [first.isoformat()], "workdays": []}, 2025: {"holidays": [],
                                                                                                "workdays": []}})
    assert not entered.provisional(first) and entered.source(2025) == "county"
    assert entered.is_workday(D(2025, 1, 28))                                 # the county said so


def test_rules_wrappers_still_count_by_the_library():
    assert is_workday(D(2025, 1, 26)) and not is_workday(D(2025, 10, 1))
    assert add_working_days(D(2025, 9, 30), 1) == D(2025, 10, 9)
    assert add_working_days(D(2026, 12, 31), 1, CAL) == D(2027, 1, 4)


def test_the_warning_year_from_1_november():
    cal = WorkCalendar.of({2039: {"holidays": [], "workdays": []}})
    assert cal.missing_year(D(2039, 10, 31)) is None
    assert cal.missing_year(D(2039, 11, 1)) == 2040
    assert cal.missing_year(D(2040, 1, 2)) == 2040            # still missing in the year itself
    assert WorkCalendar.of({2039: {"holidays": [], "workdays": []}, 2040: {"holidays": [], "workdays": []}}
                           ).missing_year(D(2039, 12, 31)) is None


@settings(max_examples=300, deadline=None)
@given(start=st.dates(min_value=D(2024, 1, 1), max_value=D(2029, 6, 30)), n=st.integers(0, 80))
def test_add_working_days_lands_on_a_working_day_and_between_inverts_it(start, n):
    for cal in (CAL, LIB):
        end = cal.add_working_days(start, n)
        assert cal.working_days_between(start, end) == n
        if n:
            assert cal.is_workday(end) and end > start
            assert cal.working_days_between(start, end - dt.timedelta(days=1)) == n - 1   # the first such day
        else:
            assert end == start


@pytest.mark.parametrize("year, holidays, days, field, words", [
    (2027, ["2026-12-31"], [], "holidays", "is not in 2027"),
    (2027, ["2027-02-30"], [], "holidays", "not a date"),
    (2027, ["2027-1-1"], [], "holidays", "not a date"),
    (2027, [20270101], [], "holidays", "not a date"),
    (2027, [], ["2027-02-08"], "workdays", "not a Saturday or Sunday"),        # a Monday
    (2027, ["2027-02-07"], ["2027-02-07"], "workdays", "both a holiday and a make-up working day"),
    (2027, "2027-01-01", [], "holidays", "must be a list"),
    ("2027", [], [], "year", "whole number"),
    (True, [], [], "year", "whole number"),
])
def test_bad_schedules_are_refused_in_words(year, holidays, days, field, words):
    with pytest.raises(ScheduleError) as exc:
        workdays.check_schedule(year, holidays, days)
    assert exc.value.field == field and words in str(exc.value)


def test_a_holiday_on_a_weekend_is_fine_and_lists_come_back_sorted_once():
    assert workdays.check_schedule(2027, ["2027-02-12", "2027-02-06", "2027-02-06"], ["2027-02-20"]) == (
        ["2027-02-06", "2027-02-12"], ["2027-02-20"])


def test_the_published_fact_is_checked_by_its_spec():
    spec = facts.SPECS[facts.CALENDAR_PUBLISHED]
    assert spec.author == facts.COUNTY
    good = spec.to_body(year=2027, holidays=sorted(SCHEDULE_2027["holidays"]), workdays=SCHEDULE_2027["workdays"],
                        at="2026-11-28T10:00:00.000Z", by="boss")
    assert spec.validate(good)[0] == 2027
    for bad in ({**good, "holidays": ["2027-01-02", "2027-01-01"]}, {**good, "by": " "}, {**good, "extra": 1},
                {**good, "workdays": ["2027-02-08"]}, {**good, "year": 2027.0}):
        with pytest.raises(RuleError):
            spec.validate(bad)

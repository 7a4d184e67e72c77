from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, strategies as st

from node.services import cases
from sync.law.intake import id_number_error, valid_id_for_demo

digits17 = st.builds(
    lambda region, born, order: f"{region}{born:%Y%m%d}{order:03d}",
    st.integers(110000, 659999).map(str), st.dates(dt.date(1900, 1, 1), dt.date(2020, 12, 31)), st.integers(0, 999))


@given(digits17)
def test_a_correct_id_number_passes(prefix):
    assert id_number_error(valid_id_for_demo(prefix)) is None


@given(digits17, st.integers(0, 16), st.integers(1, 9))
def test_any_single_digit_typo_is_caught(prefix, pos, delta):
    good = valid_id_for_demo(prefix)
    typo = good[:pos] + str((int(good[pos]) + delta) % 10) + good[pos + 1:]
    assert id_number_error(typo) is not None


@given(st.text(max_size=30))
def test_id_parser_never_crashes(text):
    assert id_number_error(text) is None or isinstance(id_number_error(text), str)


def test_id_number_with_impossible_birth_date():
    assert "birth date" in id_number_error(valid_id_for_demo("11010519490231002"))


def test_working_days_skip_national_day_and_count_make_up_days():
    # 2026-09-30 (Wed) + 1 working day: 1-7 October are holidays, so the 8th.
    assert cases.add_working_days(dt.date(2026, 9, 30), 1) == dt.date(2026, 10, 8)
    # A weekend is skipped when no holiday schedule applies.
    assert cases.add_working_days(dt.date(2026, 11, 20), 1) == dt.date(2026, 11, 23)


ITEM = {"code": "X-1", "name": "测试事项", "department": "minzheng", "levels": ["village"], "time_limit_days": 5,
        "fields": [{"name": "n", "label": "人数", "type": "int", "required": True}],
        "materials": [{"code": "id", "name": "身份证", "required": True}, {"code": "opt", "name": "其他", "required": False}]}
NOW = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))


def take(form, decision="accept", level="village"):
    base = {"name": "张三", "id_number": valid_id_for_demo("11010519800101001"), "f_n": "2", "materials": ["id"]}
    return cases.take(ITEM, {**base, **form}, decision=decision, station="V1", agent="a", catalog_version=1,
                      now=NOW, receipt_no="V1-20261120-00001", level=level)


def test_accept_promises_a_date_in_working_days():
    got = take({})
    assert got.kind == "application.accepted" and got.body["promised_date"] == "2026-11-27"
    assert got.body["fields"] == {"n": 2}


def test_accept_with_a_required_material_missing_is_refused_and_lists_it_for_correction():
    with pytest.raises(cases.IntakeError) as e:
        take({"materials": []})
    assert "materials" in e.value.errors
    notice = take({"materials": []}, "correction")
    assert notice.body["missing"] == ["id"] and "promised_date" not in notice.body


def test_script_injection_is_stored_as_text_and_other_levels_are_refused():
    got = take({"name": "<script>alert(1)</script>"})
    assert got.body["applicant"]["name"] == "<script>alert(1)</script>"    # escaped when shown, never run
    with pytest.raises(cases.IntakeError):
        take({}, level="township")
    with pytest.raises(cases.IntakeError):
        take({"f_n": "two"})
    with pytest.raises(cases.IntakeError):
        take({}, "refuse")


def test_the_station_never_signs_what_the_county_would_set_aside():
    # The same whole-body check the county runs (sync/law/intake.py) runs before the station signs.
    with pytest.raises(cases.IntakeError) as e:
        cases.take(ITEM, {"name": "张三", "id_number": valid_id_for_demo("11010519800101001"), "f_n": "2",
                          "materials": ["id"]}, decision="accept", station="V1", agent="  ", catalog_version=1,
                   now=NOW, receipt_no="V1-20261120-00001", level="village")
    assert list(e.value.errors) == ["application"]
    with pytest.raises(cases.IntakeError) as e:
        take({"f_n": "1234567890"})
    assert e.value.errors == {"f_n": "Enter a whole number."}

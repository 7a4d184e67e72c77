"""An agent whose account the admin disables is thrown out at her next click, onto the login page,
and the page says in a plain sentence why she is there (issue 8: the agent's whole day)."""

from __future__ import annotations

from tests.conftest import csrf_of, log_in
from tests.node.test_staff import NEW_PASSWORD, add_agent, csrf, station  # noqa: F401 - the fixture

SAYS = "您已退出登录：该账号已被停用或密码已更改"


def test_a_disabled_agent_lands_on_the_login_page_with_a_sentence_saying_why(station, http):  # noqa: F811
    add_agent(station)
    page, home = log_in(http, station["url"], "wangfang", NEW_PASSWORD)
    assert home.status_code == 200 and SAYS not in home.text
    assert SAYS not in http(station["url"], follow_redirects=True).get("/login").text     # nobody was thrown out

    station["admin"].post("/staff/wangfang/disable", data={"csrf": csrf(station["admin"])}).raise_for_status()
    thrown_out = page.get("/search", params={"q": "低保"})
    assert str(thrown_out.url).endswith("/login")
    assert SAYS in thrown_out.text and 'role="alert"' in thrown_out.text
    assert SAYS in page.get("/login").text                      # a reload does not lose it

    station["admin"].post("/staff/wangfang/enable", data={"csrf": csrf(station["admin"])}).raise_for_status()
    home = page.post("/login", data={"username": "wangfang", "password": NEW_PASSWORD, "csrf": csrf_of(page)})
    assert home.status_code == 200 and str(home.url).endswith("/")
    assert SAYS not in page.get("/login").text                 # logging in again clears it

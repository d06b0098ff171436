"""The participant list pages (100 rows a page) so that it stays fast at thousands of participants
(bench/bench_pages.py measures it at 10,000)."""

from __future__ import annotations

import re

from trialmgr.web.enrollment import PAGE_SIZE

T = "hip-pt-clbp"


def test_participant_list_shows_one_page_at_a_time(client, make_user, login, enroll, monkeypatch):
    monkeypatch.setattr("trialmgr.web.enrollment.PAGE_SIZE", 4)
    codes = [enroll("DE" if i % 2 else "PA") for i in range(10)]
    make_user("ivy", f"{T}:investigator")
    login("ivy")

    def shown(query: str = "") -> tuple[str, list[str]]:
        page = client.get(f"/t/{T}/participants{query}").get_data(as_text=True)
        return page, re.findall(r">((?:DE|PA)-\d{4})</a>", page)

    page, first = shown()
    assert len(first) == 4 and "10 participants; 1–4 shown (page 1 of 3)" in page and 'rel="next"' in page
    _, second = shown("?page=2")
    _, last = shown("?page=3")
    assert len(last) == 2 and 'rel="prev"' in shown("?page=3")[0]
    assert sorted(first + second + last) == sorted(codes)  # every participant once, in order over the pages
    assert first + second + last == sorted(codes)
    _, beyond = shown("?page=99")
    assert beyond == last  # past the end: the last page
    page, de = shown("?site=DE&page=2")
    assert de == sorted(c for c in codes if c.startswith("DE"))[4:] and "site=DE" in page


def test_page_size_is_a_hundred():
    assert PAGE_SIZE == 100

"""Layout in a real browser, as people read the pages: on a phone (390 px wide, a coordinator at the bedside)
nothing pushes the page sideways and the header's links keep their words together; the audit trail's words stay
whole on a desktop and on a phone; the home pages' side-by-side tables keep rows of their own height.

Participants are set up through the JSON API; the pages are reached through the menus and links.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.browser_support import (
    DESKTOP,
    TRIAL,
    api_randomized_participant,
    api_save_form,
    browser_fixture,
    follow,
    live_server_fixture,
    nav,
    no_horizontal_scroll,
    screenshot,
    signed_in,
)

pytestmark = pytest.mark.slow
live = live_server_fixture()
browser = browser_fixture()
PHONE = {"width": 390, "height": 844}
PERFORMANCE = {"gait_usual_s": "12.5", "gait_fast_s": "9.1", "tug_s": "10.2", "six_mwt_m": "400",
               "chair_stand_30s": "12"}


@pytest.fixture(scope="module")
def seeded(live) -> dict[str, str]:
    """Two randomized participants at DE with baseline forms saved: two forms but one site for the SDV tables."""
    first = api_randomized_participant(live, "DE", "F")
    api_save_form(live, first, "BL", "pain", {"back_pain": "6", "hip_pain": "2"})
    api_save_form(live, first, "BL", "performance", PERFORMANCE)
    second = api_randomized_participant(live, "DE", "M")
    api_save_form(live, second, "BL", "pain", {"back_pain": "4", "hip_pain": "1"})
    return {"first": first, "second": second}


def fits(page, what: str) -> None:
    width, client = no_horizontal_scroll(page)
    if width > client:
        screenshot(page, "phone-" + re.sub(r"\W+", "-", what).strip("-"))
    assert width <= client, f"{what} scrolls sideways at {client} px: {width} px wide"


# -- phone width -------------------------------------------------------------------------------------------------


def test_pages_fit_a_phone(live, browser, seeded):
    code = seeded["first"]
    with signed_in(browser, live, "coord", viewport=PHONE) as page:
        fits(page, "coordinator home")  # the visits-due table sits in a two-column grid
        page.goto(live.url(f"/t/{TRIAL}/participants/{code}"))
        expect(page.get_by_role("heading", level=1)).to_have_text(f"Participant {code}")
        fits(page, "participant page")  # label/value lists with long labels (screening answers)
        follow(page, page.locator("#visit-BL").get_by_role("link", name="Physical performance"))
        fits(page, "visit form")
        page.goto(live.url("/account/two-factor"))
        fits(page, "two-factor set-up")  # the otpauth:// address is one long word
        screenshot(page, "two-factor-phone")

    with signed_in(browser, live, "monitor", viewport=PHONE) as page:
        fits(page, "monitor home")
        nav(page, "Audit trail")
        fits(page, "audit trail")
        page.goto(live.url(f"/t/{TRIAL}/participants/{code}/visits/BL/forms/pain"))
        follow(page, page.locator("tr#back_pain").get_by_role("link", name="History"))
        expect(page.get_by_role("heading", level=1)).to_contain_text("History of")
        fits(page, "field history")

    with signed_in(browser, live, "admin", viewport=PHONE) as page:
        fits(page, "admin home")

    with signed_in(browser, live, "investigator2", viewport=PHONE) as page:
        nav(page, "Randomization")
        fits(page, "randomization")  # the list's SHA-256 commitment


TEXT_LINES = """el => {
  const r = document.createRange();
  r.selectNodeContents(el);
  return new Set([...r.getClientRects()].map(x => Math.round(x.top))).size;
}"""


def test_header_links_keep_their_words_together_on_a_phone(live, browser, seeded):
    """ "Two-factor" and "Sign out" were broken over two lines each, beside a name broken over two more."""
    with signed_in(browser, live, "coord", viewport=PHONE) as page:
        account = page.get_by_role("navigation", name="Account")
        for item in (account.get_by_role("link", name="Two-factor"), account.get_by_role("button", name="Sign out"),
                     account.get_by_text("Cora Coordinator")):
            lines = item.evaluate(TEXT_LINES)
            assert lines == 1, f"{item} is drawn on {lines} lines"


# -- the audit trail -----------------------------------------------------------------------------------------


BROKEN_WORDS = """table => {
  // Words (split at spaces and hyphens, where a line may break) that the browser drew on more than one line.
  const out = [];
  for (const td of table.querySelectorAll('tbody tr:nth-child(-n+20) td')) {
    const walker = document.createTreeWalker(td, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (const m of node.data.matchAll(/[^\\s\\-]+/g)) {
        const r = document.createRange();
        r.setStart(node, m.index);
        r.setEnd(node, m.index + m[0].length);
        if (new Set([...r.getClientRects()].map(x => Math.round(x.top))).size > 1) out.push(m[0]);
      }
    }
  }
  return out;
}"""


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_audit_trail_words_are_never_cut(live, browser, seeded, viewport):
    """Entry numbers, user names, actions and values were cut mid-word ("1159|6", "enrolle|d") at 1280 px."""
    with signed_in(browser, live, "monitor", viewport=viewport) as page:
        nav(page, "Audit trail")
        table = page.locator("table.audit")
        expect(table.locator("tbody tr").first).to_be_visible()
        broken = table.evaluate(BROKEN_WORDS)
        if broken:
            screenshot(page, f"audit-trail-{viewport['width']}")
        assert broken == [], f"words cut over two lines in the audit trail: {sorted(set(broken))[:20]}"
        fits(page, "audit trail")  # a wide table scrolls in its own box, not the page


# -- the home pages --------------------------------------------------------------------------------------------


STRETCHED_ROWS = """table => [...table.querySelectorAll('tbody tr')].map(tr => {
  // A row's height against the tallest content of its cells (plus their padding): equal unless stretched.
  let content = 0;
  for (const td of tr.cells) {
    const r = document.createRange();
    r.selectNodeContents(td);
    const style = getComputedStyle(td);
    content = Math.max(content, r.getBoundingClientRect().height + parseFloat(style.paddingTop)
                                + parseFloat(style.paddingBottom));
  }
  return [tr.innerText.trim().split(/\\s+/)[0], Math.round(tr.getBoundingClientRect().height), Math.round(content)];
})"""


def test_monitor_home_tables_side_by_side_keep_their_row_heights(live, browser, seeded):
    """Source data verification by site (one row) beside by form (two rows): the by-site row was stretched to the
    height of the other table."""
    with signed_in(browser, live, "monitor", viewport=DESKTOP) as page:
        sdv = page.get_by_role("region", name="Source data verification")
        for caption in ("By site", "By form"):
            table = sdv.locator("table").filter(has=page.locator("caption", has_text=caption))
            rows = table.evaluate(STRETCHED_ROWS)
            stretched = [(first, height, content) for first, height, content in rows if height > content + 12]
            if stretched:
                screenshot(page, "monitor-sdv-tables")
            assert stretched == [], f"{caption}: rows taller than their content (row, height, content): {stretched}"

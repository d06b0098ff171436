"""Layout in a real browser, as people read the pages: the audit trail's words stay whole on a desktop and on a
phone (390 px wide); the home pages' side-by-side tables keep rows of their own height.

Participants are set up through the JSON API; the pages are reached through the menus and links.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.browser_support import (
    DESKTOP,
    api_randomized_participant,
    api_save_form,
    browser_fixture,
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


# -- desktop ----------------------------------------------------------------------------------------------------


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

"""Monitor, outcome assessor and administrator in a real browser.

The monitor raises a query on a saved field, the coordinator answers it (in a second browser context), the
monitor closes it, marks the form source-verified, filters the audit trail and verifies its integrity. The
monitor and the assessor are blinded: no page either of them opens may name an arm. The administrator's home
page lists the users and the allocation list's status.

Participants are set up through the JSON API (the pages for that are tested in test_browser_coordinator.py).
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.browser_support import (
    DEMO_USERS,
    TABLET,
    api_randomized_participant,
    api_save_form,
    assert_no_arm,
    browser_fixture,
    follow,
    live_server_fixture,
    nav,
    no_horizontal_scroll,
    screenshot,
    signed_in,
    unlabelled_controls,
)

pytestmark = pytest.mark.slow
live = live_server_fixture()
browser = browser_fixture()


@pytest.fixture(scope="module")
def seeded(live) -> dict[str, str]:
    """Two randomized participants at DE: `queried` with baseline pain saved, `fresh` with nothing entered."""
    queried = api_randomized_participant(live, "DE", "F")
    api_save_form(live, queried, "BL", "pain", {"back_pain": "6", "hip_pain": "2"})
    fresh = api_randomized_participant(live, "DE", "M")
    return {"queried": queried, "fresh": fresh}


def flash(page, text: str):
    return page.get_by_role("status").filter(has_text=text)


def test_monitor_query_cycle_sdv_audit_and_blinding(live, browser, seeded):
    code = seeded["queried"]
    with signed_in(browser, live, "monitor") as mon:
        expect(mon.get_by_role("heading", level=1)).to_have_text("Monitor — data review")
        assert_no_arm(mon, "monitor home")
        screenshot(mon, "monitor")

        # To the saved baseline pain form through the pages: Participants -> participant -> visit form.
        nav(mon, "Participants")
        assert_no_arm(mon, "participant list")
        mon.get_by_role("link", name=code, exact=True).click()
        expect(mon.get_by_role("heading", level=1)).to_have_text(f"Participant {code}")
        expect(mon.locator("#arm")).to_have_count(0)
        assert_no_arm(mon, "participant page")
        mon.locator("#visit-BL").get_by_role("link", name="Pain intensity (NPRS)").click()
        expect(mon.get_by_role("heading", level=1)).to_have_text("Pain intensity (NPRS)")
        assert_no_arm(mon, "form page")
        assert unlabelled_controls(mon) == []
        form_url = mon.url

        # The value's history, from its row: who entered what.
        row = mon.locator("tr#back_pain")
        expect(row.get_by_role("cell").first).to_have_text("6")
        follow(mon, row.get_by_role("link", name="History"))
        expect(mon.get_by_role("heading", level=1)).to_have_text("History of Low back pain")
        expect(mon.locator("table tbody tr").filter(has_text="coord_de")).to_contain_text("6")
        assert_no_arm(mon, "field history")
        follow(mon, mon.get_by_role("link", name=f"All entries for {code}"))
        expect(mon.get_by_role("heading", level=1)).to_have_text("Audit trail")
        expect(mon.get_by_label("Participant")).to_have_value(code)
        mon.goto(form_url)

        # Raise a query on "Low back pain": an empty text is refused next to the box, then it is raised.
        row = mon.locator("tr#back_pain")
        row.get_by_text("Raise a query").click()
        row.get_by_role("button", name="Raise query").click()
        row = mon.locator("tr#back_pain")
        box = row.get_by_label("Query about Low back pain")
        expect(box).to_have_attribute("aria-invalid", "true")
        error = row.locator("p.error")
        expect(error).to_contain_text("Query text on Low back pain")
        assert error.get_attribute("id") in (box.get_attribute("aria-describedby") or "").split()
        box.fill("Back pain 6 at baseline, but the source worksheet says 8. Please check.")
        row.get_by_role("button", name="Raise query").click()
        raised = flash(mon, re.compile(r"Query \d+ raised on Low back pain\."))
        expect(raised).to_be_visible()
        query_id = re.search(r"Query (\d+)", raised.inner_text()).group(1)
        expect(mon.locator("tr#back_pain")).to_contain_text(f"query {query_id}")

        # The coordinator finds it from the home page and answers it.
        with signed_in(browser, live, "coord") as coord:
            expect(coord.get_by_role("region", name="Open queries")).to_contain_text("1 to answer")
            coord.get_by_role("region", name="Open queries").get_by_role("link", name="All queries").click()
            coord.get_by_role("link", name=f"Query {query_id}", exact=True).click()
            expect(coord.get_by_role("heading", level=1)).to_contain_text(f"Query {query_id}")
            coord.get_by_role("button", name="Send answer").click()  # empty: refused, in words
            expect(coord.get_by_role("alert")).to_be_visible()
            coord.get_by_label("Your answer").fill("Checked the worksheet: 6 is right, the 8 was the hip score.")
            coord.get_by_role("button", name="Send answer").click()
            expect(flash(coord, f"Query {query_id} answered.")).to_be_visible()

        # The monitor sees the answer in the query list and closes the query.
        nav(mon, "Queries")
        assert_no_arm(mon, "query list")
        mon.get_by_label("Status").select_option("answered")
        mon.get_by_role("button", name="Apply").click()
        expect(mon.locator("table.queries tbody tr")).to_have_count(1)
        mon.get_by_role("link", name=f"Query {query_id}", exact=True).click()
        expect(mon.get_by_text("the 8 was the hip score")).to_be_visible()
        assert_no_arm(mon, "query page")
        mon.get_by_label("Closing note (optional)").fill("Resolved: value confirmed against source.")
        mon.get_by_role("button", name=f"Close query {query_id}").click()
        expect(flash(mon, f"Query {query_id} closed.")).to_be_visible()
        expect(mon.get_by_role("heading", level=1)).to_contain_text("closed")

        # Source data verification, from the query's link back to the field's form.
        mon.get_by_role("link", name="Go to Low back pain on the form").click()
        expect(mon).to_have_url(re.compile(re.escape(form_url) + "#back_pain$"))
        expect(mon.locator("#sdv")).to_contain_text("not source-verified")
        mon.get_by_role("button", name="SDV: mark verified").click()
        expect(flash(mon, "Pain intensity (NPRS) marked as source-verified.")).to_be_visible()
        expect(mon.locator("#sdv")).to_contain_text("source verified by monitor")
        expect(mon.get_by_role("button", name="SDV: mark verified")).to_have_count(0)
        assert_no_arm(mon, "verified form page")

        # The audit trail, filtered: a malformed date is refused next to its box, then participant + user.
        nav(mon, "Audit trail")
        assert_no_arm(mon, "audit trail")
        mon.get_by_label("From (UTC)").fill("last Tuesday")
        mon.get_by_role("button", name="Apply").click()
        since = mon.get_by_label("From (UTC)")
        expect(since).to_have_attribute("aria-invalid", "true")
        expect(mon.locator("div.field").filter(has=since).locator("p.error")).to_contain_text(
            "must be a date or time")
        since.fill("")
        mon.get_by_label("Participant").fill(code)
        mon.get_by_label("User").fill("monitor")
        mon.get_by_role("button", name="Apply").click()
        expect(mon).to_have_url(re.compile(r"[?&]user=monitor(&|$)"))
        rows = mon.locator("table.audit tbody tr")
        expect(rows.filter(has_text="sdv:verify")).to_have_count(1)
        actions = [t.strip() for t in rows.locator("td:nth-child(4)").all_inner_texts()]
        assert {"query:open", "query:close", "sdv:verify"} <= set(actions), actions
        for who, record in zip(rows.locator("td:nth-child(3)").all_inner_texts(),
                               rows.locator("td:nth-child(5)").all_inner_texts(), strict=True):
            assert who.startswith("monitor"), who
            assert code in record, record
        assert_no_arm(mon, "filtered audit trail")

        # Verify now: the chains and signed checkpoints check out.
        mon.get_by_role("button", name="Verify now").click()
        expect(flash(mon, "Audit trail verified")).to_be_visible()
        expect(mon.locator("#integrity-status")).to_contain_text("verified")
        assert_no_arm(mon, "audit trail after verification")

        # The other pages in the monitor's menu are blinded too.
        for name in ("Screening log", "Data lock and export", "Reports", "Home"):
            nav(mon, name)
            assert_no_arm(mon, name)
        # Back home, the work shows: verified integrity, no open query, the one complete form verified.
        expect(mon.get_by_role("region", name="Audit trail integrity")).to_contain_text("Verified")
        expect(mon.get_by_role("region", name="Open queries by site").get_by_role("row", name=re.compile(
            "^All sites"))).to_contain_text("0")
        expect(mon.get_by_role("region", name="Source data verification")).to_contain_text(
            "1 of 1 complete forms verified (100%)")


def test_assessor_enters_an_outcome_form_without_seeing_the_arm(live, browser, seeded):
    code = seeded["fresh"]
    with signed_in(browser, live, "assessor") as page:
        expect(page.get_by_role("heading", level=1)).to_have_text("Outcome assessor — your sites' assessments")
        assert_no_arm(page, "assessor home")
        screenshot(page, "assessor")

        nav(page, "Participants")
        assert_no_arm(page, "participant list")
        follow(page, page.get_by_role("link", name=code, exact=True))
        expect(page.get_by_role("heading", level=1)).to_have_text(f"Participant {code}")
        expect(page.locator("#arm")).to_have_count(0)
        assert_no_arm(page, "participant page")
        baseline = page.locator("#visit-BL")
        # Forms that can reveal the treatment are not offered to a blinded assessor.
        expect(baseline.get_by_role("link", name="Demographics")).to_have_count(0)
        expect(page.get_by_role("link", name=re.compile("^Report adverse event"))).to_have_count(0)

        baseline.get_by_role("link", name="Pain intensity (NPRS)").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Pain intensity (NPRS)")
        assert_no_arm(page, "pain form")
        assert unlabelled_controls(page) == []
        page.get_by_label("Hip pain", exact=True).fill("4")
        page.get_by_role("button", name="Save as complete").click()
        # Nothing typed in "Low back pain" and no reason given: refused, with the error by that field.
        expect(page.get_by_role("alert")).to_be_visible()
        expect(page.locator("div.field").filter(has=page.get_by_label("Low back pain", exact=True))
               .locator("p.error")).to_have_count(1)
        expect(page.get_by_label("Hip pain", exact=True)).to_have_value("4")
        page.get_by_label("Low back pain", exact=True).fill("5")
        page.get_by_role("button", name="Save as complete").click()
        expect(flash(page, "Pain intensity (NPRS) saved as complete.")).to_be_visible()
        assert_no_arm(page, "saved pain form")

        page.get_by_role("link", name=f"Back to participant {code}").click()
        expect(page.locator("#visit-BL").get_by_role("listitem").filter(has_text="Pain intensity (NPRS)")
               ).to_contain_text("complete")
        assert_no_arm(page, "participant page after saving")
        nav(page, "Queries")
        assert_no_arm(page, "assessor query list")


def test_admin_home_shows_users_and_list_status(live, browser, seeded):
    with signed_in(browser, live, "admin") as page:
        expect(page.get_by_role("heading", level=1)).to_have_text("Administration")
        screenshot(page, "admin")
        users = page.get_by_role("region", name="Users")
        for u in DEMO_USERS.values():
            row = users.get_by_role("row").filter(has=page.get_by_role("cell", name=u.username, exact=True))
            expect(row).to_contain_text(u.full_name)
            expect(row).to_contain_text("active")
            expect(row).to_contain_text(u.role.replace(":", ": "))
        lists = page.get_by_role("region", name="Randomization list status")
        expect(lists).to_contain_text("Counts only")
        # Two DE participants randomized by the fixture: one in DE|F, one in DE|M.
        for stratum in ("DE|F", "DE|M"):
            cells = lists.get_by_role("row").filter(has=page.get_by_role("cell", name=stratum, exact=True)) \
                .get_by_role("cell")
            expect(cells.nth(1)).to_have_text("1")
        width, client = no_horizontal_scroll(page)
        assert width <= client


def test_home_pages_fit_a_tablet(live, browser, seeded):
    for username in ("monitor", "admin", "investigator2"):
        with signed_in(browser, live, username, viewport=TABLET) as page:
            width, client = no_horizontal_scroll(page)
            assert width <= client, f"{username} home scrolls sideways at 768 px: {width} > {client}"
            screenshot(page, f"{DEMO_USERS[username].role_name}-tablet")

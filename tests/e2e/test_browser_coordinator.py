"""A site coordinator in a real browser: screening (refused and accepted), consent and enrollment,
randomization, then baseline and week-4 case report forms with a validation error corrected on the page.
Also: keyboard reach and labels on the login and screening forms, and tablet width without sideways scrolling.

One live gunicorn (SQLite, or PostgreSQL when TRIALMGR_TEST_DATABASE_URL is set) and one Chromium for the file.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from playwright.sync_api import expect

from tests.e2e.browser_support import (
    PASSWORD,
    TABLET,
    TRIAL,
    browser_fixture,
    fill_screening,
    live_server_fixture,
    nav,
    new_page,
    no_horizontal_scroll,
    screenshot,
    sign_in,
    signed_in,
    unlabelled_controls,
    utc_today,
)

pytestmark = pytest.mark.slow
live = live_server_fixture()
browser = browser_fixture()

ARMS = ("Hip-focused PT", "Spine-focused PT")


def field_box(page, label: str):
    """The `.field` block of a labelled input: its label, hint, input and error messages."""
    return page.locator("div.field").filter(has=page.get_by_label(label, exact=True))


def test_coordinator_screens_enrolls_randomizes_and_enters_forms(live, browser):
    today = utc_today()
    with signed_in(browser, live, "coord") as page:
        expect(page.get_by_role("heading", level=1)).to_have_text("Coordinator — your sites' work")
        screenshot(page, "coordinator")
        nav(page, "Screen a candidate")
        expect(page.get_by_role("heading", level=1)).to_have_text("Screen a candidate")

        # 1. Not eligible: 5 months of pain and 64 years old. Both failed criteria are listed.
        fill_screening(page, age=64, pain_months="5")
        page.get_by_role("button", name="Check eligibility and save the screening").click()
        expect(page.locator("#verdict")).to_contain_text("NOT ELIGIBLE — 2 criteria not met")
        failures = page.locator("ul.failures > li")
        expect(failures).to_have_count(2)
        expect(failures.filter(has_text="Age 65 or older")).to_have_count(1)
        expect(failures.filter(has_text="Low back pain for at least 6 months")).to_have_count(1)
        expect(page.get_by_role("button", name="Record consent and enroll")).to_have_count(0)
        ineligible_url = page.url

        # 2. Eligible, from the link on the result page (no typed URL).
        page.get_by_role("link", name="Screen another candidate").click()
        fill_screening(page, age=71, pain_months="14", sex="M — Male")
        page.get_by_role("button", name="Check eligibility and save the screening").click()
        expect(page.locator("#verdict")).to_contain_text("ELIGIBLE — the candidate meets every criterion")
        assert page.url != ineligible_url

        # 3. Consent (date and version are pre-filled with today and the current version) and enroll.
        enroll = page.get_by_role("region", name="Record consent and enroll")
        expect(enroll.get_by_label("Date informed consent was signed")).to_have_value(today.isoformat())
        expect(enroll.get_by_label("Consent form version")).to_have_value("1.0")
        enroll.get_by_role("button", name="Record consent and enroll").click()
        heading = page.get_by_role("heading", level=1)
        expect(heading).to_have_text(re.compile(r"^Participant DE-\d{4}$"))
        code = heading.inner_text().split()[-1]
        expect(page.get_by_role("heading", name="Status: enrolled")).to_be_visible()

        # 4. Confirm, then randomize; the confirmation names the arm, the date and the W4 window.
        page.get_by_role("button", name="Randomize").click()
        expect(page.get_by_role("heading", level=1)).to_have_text(f"Randomize {code}?")
        page.get_by_role("button", name=f"Yes, randomize {code}").click()
        done = page.get_by_role("heading", level=1)
        expect(done).to_have_text(re.compile(
            rf"^{code} randomized to ({'|'.join(ARMS)}) on {today.isoformat()}$"))
        w4_from, w4_to = today + dt.timedelta(days=21), today + dt.timedelta(days=35)
        expect(page.locator("#next-visit")).to_have_text(
            f"Next: visit W4 (Week 4) due {w4_from.isoformat()} to {w4_to.isoformat()}.")

        # 5. Baseline pain form, reached from the participant's visit timeline.
        page.get_by_role("link", name=f"Participant {code}").click()
        baseline = page.locator("#visit-BL")
        baseline.get_by_role("link", name="Pain intensity (NPRS)").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Pain intensity (NPRS)")
        assert unlabelled_controls(page) == []
        page.get_by_label("Low back pain", exact=True).fill("seven")
        page.get_by_label("Hip pain", exact=True).fill("3")
        page.get_by_role("button", name="Save as complete").click()
        # The error sits next to its field, is tied to it for screen readers, and what was typed is kept.
        box = field_box(page, "Low back pain")
        error = box.locator("p.error")
        expect(error).to_have_text("Low back pain must be a whole number.")
        back_pain = page.get_by_label("Low back pain", exact=True)
        expect(back_pain).to_have_attribute("aria-invalid", "true")
        expect(back_pain).to_have_value("seven")
        described = back_pain.get_attribute("aria-describedby") or ""
        assert error.get_attribute("id") in described.split()
        expect(page.get_by_label("Hip pain", exact=True)).to_have_value("3")
        expect(page.get_by_role("alert")).to_contain_text("Low back pain must be a whole number.")
        expect(field_box(page, "Hip pain").locator("p.error")).to_have_count(0)
        screenshot(page, "crf-form-error")
        back_pain.fill("7")
        page.get_by_role("button", name="Save as complete").click()
        expect(page.get_by_role("status").filter(has_text="Pain intensity (NPRS) saved as complete.")).to_be_visible()
        expect(page.locator("p.error")).to_have_count(0)
        expect(page.get_by_label("Low back pain", exact=True)).to_have_value("7")

        # 6. Week 4 (its window opens in three weeks): the service takes the data and records the visit date.
        page.get_by_role("link", name=f"Back to participant {code}").click()
        expect(page.locator("#visit-BL").get_by_text("complete", exact=True)).to_have_count(1)
        page.locator("#visit-W4").get_by_role("link", name="Pain intensity (NPRS)").click()
        expect(page.get_by_text(re.compile(r"Visit\s*W4 — Week 4"))).to_be_visible()
        page.get_by_label("Low back pain", exact=True).fill("11")
        page.get_by_label("Hip pain", exact=True).fill("2")
        page.get_by_role("button", name="Save as complete").click()
        expect(field_box(page, "Low back pain").locator("p.error")).to_have_text(
            "Low back pain must be between 0 and 10.")
        page.get_by_label("Low back pain", exact=True).fill("5")
        page.get_by_role("button", name="Save as complete").click()
        expect(page.get_by_role("status").filter(has_text="Pain intensity (NPRS) saved as complete.")).to_be_visible()
        page.get_by_role("link", name=f"Back to participant {code}").click()
        w4 = page.locator("#visit-W4")
        expect(w4).to_contain_text(f"done on {today.isoformat()}")
        expect(w4.get_by_role("listitem").filter(has_text="Pain intensity (NPRS)")).to_contain_text("complete")

        # The W4 session log: a check across two fields puts its message by the field it names.
        w4.get_by_role("link", name="Treatment session log review").click()
        page.get_by_label("Sessions planned so far", exact=True).fill("4")
        page.get_by_label("Sessions attended so far", exact=True).fill("6")
        page.get_by_role("group", name="Home exercise program done").get_by_label("most — Most days").check()
        page.get_by_role("button", name="Save as complete").click()
        attended = page.get_by_label("Sessions attended so far", exact=True)
        expect(attended).to_have_attribute("aria-invalid", "true")
        expect(field_box(page, "Sessions attended so far").locator("p.error")).to_have_text(
            "Sessions attended so far cannot be more than the sessions planned.")
        expect(page.get_by_role("group", name="Home exercise program done").get_by_label("most — Most days")
               ).to_be_checked()
        attended.fill("3")
        page.get_by_role("button", name="Save as complete").click()
        expect(page.get_by_role("status").filter(has_text="Treatment session log review saved as complete.")
               ).to_be_visible()
        # Every W4 form is complete three weeks before the window opens: a deviation is recorded by itself.
        expect(page.get_by_role("status").filter(has_text="outside its window: a protocol deviation was recorded")
               ).to_be_visible()
        expect(page.get_by_role("region", name="Scores worked out by the server")).to_contain_text("0.75")
        page.get_by_role("link", name=f"Back to participant {code}").click()
        expect(page.locator("#visit-W4")).to_contain_text("completed out of window")
        expect(page.get_by_role("region", name="Adverse events, deviations and withdrawal")).to_contain_text(
            "Visit W4 done on")

        # The screening log shows both screenings, the refused one with its reasons.
        nav(page, "Screening log")
        rows = page.locator("table tbody tr")
        expect(rows).to_have_count(2)
        refused = rows.filter(has_text="ineligible")
        expect(refused).to_contain_text("Age 65 or older")
        expect(refused).to_contain_text("Low back pain for at least 6 months")
        expect(rows.filter(has_text=code)).to_contain_text("enrolled")

        # Home shows the new participant: recently enrolled, and baseline due today with what is left to enter.
        nav(page, "Home")
        recent = page.get_by_role("region", name="Recent enrollments").get_by_role("row").filter(has_text=code)
        expect(recent).to_contain_text("randomized")
        due = page.get_by_role("region", name="Visits due today").get_by_role("row").filter(has_text=code)
        expect(due).to_contain_text("BL")
        expect(due).to_contain_text(re.compile(r"demographics|Demographics"))  # the other baseline forms are due
        expect(due).not_to_contain_text("Pain intensity (NPRS)")  # baseline pain is entered


# -- keyboard ------------------------------------------------------------------------------------------------


FOCUS_ID = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  return {tag: el.tagName.toLowerCase(), type: el.type || '', id: el.id, name: el.name || '',
          text: (el.innerText || el.value || '').trim(),
          outline: getComputedStyle(el).outlineStyle !== 'none' && parseFloat(getComputedStyle(el).outlineWidth) > 0};
}"""

def tab_through(page, start, limit: int = 80) -> list[dict]:
    """Focus `start`, then press Tab until a submit button (other than "Sign out") has focus; returns each
    focused element once, in order. A radio group is one stop; a date input takes one Tab per part (month, day,
    year) but is one stop here, with `outline` true when any of its parts showed the focus outline."""
    start.focus()
    seen = [page.evaluate(FOCUS_ID)]
    for _ in range(limit):
        page.keyboard.press("Tab")
        cur = page.evaluate(FOCUS_ID)
        if cur is None:
            break
        last = seen[-1]
        if (cur["tag"], cur["id"], cur["name"]) == (last["tag"], last["id"], last["name"]):
            last["outline"] = last["outline"] or cur["outline"]
        else:
            seen.append(cur)
        if cur["tag"] == "button" and cur["type"] == "submit" and cur["text"] != "Sign out":
            break
    return seen


def test_keyboard_reaches_every_login_input_in_order(live, browser):
    with new_page(browser) as page:
        page.goto(live.url("/login"))
        assert unlabelled_controls(page) == []
        # From the top of the page: the skip link and the header's links, then the form in reading order.
        page.keyboard.press("Tab")
        expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
        seen = tab_through(page, page.get_by_role("link", name="Skip to content"))
        inputs = [(el["tag"], el["id"] or el["text"]) for el in seen if el["tag"] != "a"]
        assert inputs == [("input", "username"), ("input", "password"), ("button", "Sign in")], seen
        assert all(el["tag"] == "a" for el in seen[: len(seen) - 3]), seen
        assert all(el["outline"] for el in seen), seen
        # A failed sign-in shows the error in words and keeps what was typed.
        page.get_by_label("User name").fill("coord")
        page.get_by_label("Password").fill("not the password at all")
        page.keyboard.press("Enter")
        expect(page.get_by_role("alert")).to_be_visible()
        expect(page.get_by_label("User name")).to_have_value("coord")
        # Signing in works with the keyboard alone.
        page.get_by_label("User name").focus()
        page.keyboard.press("Tab")
        expect(page.get_by_label("Password")).to_be_focused()
        page.keyboard.type(PASSWORD)
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(rf"/t/{TRIAL}/coordinator$"))


def test_keyboard_reaches_every_screening_input_in_order(live, browser):
    with signed_in(browser, live, "coord") as page:
        page.goto(live.url(f"/t/{TRIAL}/screen"))
        assert unlabelled_controls(page) == []
        form = page.get_by_role("form", name="Screening questions")
        expected = [(el["tag"], el["id"] if el["type"] != "radio" else el["name"]) for el in form.evaluate(
            """f => [...f.querySelectorAll('input, select, textarea, button')]
                   .filter(e => e.type !== 'hidden')
                   .map(e => ({tag: e.tagName.toLowerCase(), type: e.type, id: e.id, name: e.name}))""")]
        expected = [x for i, x in enumerate(expected) if x not in expected[:i]]  # one stop per radio group
        first = page.get_by_label("Site")
        seen = tab_through(page, first)
        got = [(el["tag"], el["id"] if el["type"] != "radio" else el["name"]) for el in seen]
        assert got == expected, f"focus order {got}\nexpected {expected}"
        assert got[-1] == ("button", "")
        # Where the keyboard is stays visible: every stop gets the focus outline.
        assert [el["id"] or el["name"] for el in seen if not el["outline"]] == []
        expect(page.get_by_role("button", name="Check eligibility and save the screening")).to_be_focused()
        # Space picks a radio once the group has focus: the form can be answered without a mouse.
        page.get_by_role("group", name="Sex").get_by_label("F — Female").focus()
        page.keyboard.press("Space")
        expect(page.get_by_role("group", name="Sex").get_by_label("F — Female")).to_be_checked()


# -- tablet width --------------------------------------------------------------------------------------------


def test_tablet_width_has_no_sideways_scrolling(live, browser):
    with new_page(browser, viewport=TABLET) as page:
        sign_in(page, live, "coord")
        width, client = no_horizontal_scroll(page)
        assert width <= client, f"coordinator home scrolls sideways at 768 px: {width} > {client}"
        screenshot(page, "coordinator-tablet")
        page.goto(live.url(f"/t/{TRIAL}/screen"))
        width, client = no_horizontal_scroll(page)
        assert width <= client, f"screening form scrolls sideways at 768 px: {width} > {client}"
        # With every error shown too (the longest version of the page).
        page.get_by_role("button", name="Check eligibility and save the screening").click()
        expect(page.get_by_role("alert")).to_be_visible()
        # A radio group in error is outlined in the error colour, as a text box in error is (radios draw no
        # border of their own).
        sex = page.get_by_role("group", name="Sex")
        expect(sex).to_have_css("border-top-color", "rgb(180, 35, 24)")
        expect(sex).to_have_css("border-top-width", "2px")
        width, client = no_horizontal_scroll(page)
        assert width <= client, f"screening form with errors scrolls sideways at 768 px: {width} > {client}"
        screenshot(page, "screening-errors-tablet")

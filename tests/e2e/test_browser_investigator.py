"""The investigator in a real browser: the CONSORT diagram on the home page against the screenings this test
made (assessed, excluded by criterion, randomized) and its update after one more screening done on the pages;
then freezing and locking the data with a signature (a wrong password first), and exporting the locked bundle
through the progress page down to the downloaded zip.

The tests run in file order: locking comes last because nothing can be screened once the data are locked.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from playwright.sync_api import expect

from tests.e2e.browser_support import (
    BASE_API,
    PASSWORD,
    api_randomized_participant,
    assert_no_arm,
    birth_date_for_age,
    browser_fixture,
    fill_screening,
    live_server_fixture,
    nav,
    read_manifest,
    screenshot,
    signed_in,
    unlabelled_controls,
)
from tests.support import eligible_answers

pytestmark = pytest.mark.slow
live = live_server_fixture()
browser = browser_fixture()
SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def seeded(live) -> dict:
    """Two candidates refused (three failed criteria between them), two randomized: the CONSORT's input."""
    refused = [
        eligible_answers(date_of_birth=birth_date_for_age(64), back_pain_months="5"),  # age and duration
        eligible_answers(mmse_score="20"),                                               # MMSE
    ]
    with live.api("DE") as api:
        for answers in refused:
            r = api.post(f"{BASE_API}/screenings", {"answers": answers, "site": "DE"})
            assert r.status == 201 and not r.json()["eligible"], r.body
    codes = [api_randomized_participant(live, "DE", "F"), api_randomized_participant(live, "PA", "M")]
    return {"codes": codes}


def consort_text(page) -> str:
    """Every text drawn in the CONSORT diagram on the page, in drawing order, joined by single spaces (a long
    line is wrapped into several <text> elements)."""
    texts = page.locator("figure.consort svg text").all_text_contents()
    return " ".join(t.strip() for t in texts if t.strip())


def allocated(text: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"Allocated to (.+?) \(n=(\d+)\)", text)}


def check_consort(text: str, *, assessed: int, excluded: int, by_criterion: dict[str, int],
                  randomized: int) -> None:
    for expected in (f"Assessed for eligibility (n={assessed})", f"Excluded (n={excluded})",
                     f"Not meeting inclusion criteria (n={excluded})", f"Randomized (n={randomized})",
                     *(f"{criterion} (n={n})" for criterion, n in by_criterion.items())):
        assert expected in text, f"{expected!r} not in the diagram: {text}"
    arms = allocated(text)
    assert len(arms) == 2 and sum(arms.values()) == randomized, text


def test_consort_diagram_counts_and_updates(live, browser, seeded):
    with signed_in(browser, live, "investigator2", accept_downloads=True) as page:
        expect(page.get_by_role("heading", level=1)).to_have_text("Investigator — trial progress")
        consort = page.get_by_role("region", name="CONSORT flow diagram")
        expect(consort).to_be_visible()
        screenshot(page, "investigator")
        criteria = {"Age 65 or older": 1, "Low back pain for at least 6 months": 1, "MMSE score 24 or higher": 1}
        check_consort(consort_text(page), assessed=4, excluded=2, by_criterion=criteria, randomized=2)
        # Each phase label, as the browser draws it, stays inside its band (rotated: its height is its length).
        overflow = consort.locator("svg").evaluate("""svg => [...svg.querySelectorAll('text[transform^="rotate"]')]
            .map(t => { const band = t.previousElementSibling.getBoundingClientRect();
                        const box = t.getBoundingClientRect();
                        return [t.textContent, box.top >= band.top - 0.5 && box.bottom <= band.bottom + 0.5]; })""")
        assert len(overflow) == 4 and all(inside for _, inside in overflow), overflow
        # The investigator is not blinded: the arms carry their names.
        assert set(allocated(consort_text(page))) == {"Hip-focused PT", "Spine-focused PT"}
        # The text equivalent under the picture says the same.
        caption = consort.locator("figcaption")
        expect(caption).to_contain_text("Assessed for eligibility: 4.")
        expect(caption).to_contain_text("Randomized: 2.")

        # The downloadable SVG is well-formed and carries the same numbers.
        with page.expect_download() as dl:
            consort.get_by_role("link", name="Download the diagram (SVG)").click()
        path = dl.value.path()
        root = ET.parse(path).getroot()
        assert root.tag == f"{SVG_NS}svg"
        drawn = " ".join("".join(t.itertext()).strip() for t in root.iter(f"{SVG_NS}text"))
        assert "Assessed for eligibility (n=4)" in drawn and "Randomized (n=2)" in drawn, drawn

        # One more screening, done on the pages: needs a wheelchair (an exclusion criterion).
        nav(page, "Screen a candidate")
        page.get_by_label("Site").select_option("NC")
        fill_screening(page, yes=["Needs a wheelchair"])
        page.get_by_role("button", name="Check eligibility and save the screening").click()
        expect(page.locator("#verdict")).to_contain_text("NOT ELIGIBLE — 1 criterion not met")
        expect(page.locator("ul.failures")).to_contain_text("Needs a wheelchair")
        nav(page, "Home")
        expect(page.get_by_role("heading", level=1)).to_have_text("Investigator — trial progress")
        check_consort(consort_text(page), assessed=5, excluded=3,
                      by_criterion={**criteria, "Needs a wheelchair": 1}, randomized=2)
        expect(page.get_by_role("region", name="CONSORT flow diagram").locator("figcaption")).to_contain_text(
            "Assessed for eligibility: 5.")


def test_monitor_sees_consort_with_the_arms_pooled(live, browser, seeded):
    with signed_in(browser, live, "monitor") as page:
        consort = page.get_by_role("region", name="CONSORT flow diagram")
        expect(consort).to_be_visible()
        text = consort_text(page)
        assert allocated(text) == {}, text  # no "Allocated to <group>" column of any name
        assert "Allocated, arms pooled (n=2)" in text, text
        assert "Randomized (n=2)" in text, text
        assert_no_arm(page, "monitor home with CONSORT")


def test_freeze_lock_with_signature_then_export_locked_bundle(live, browser, seeded, tmp_path):
    with signed_in(browser, live, "investigator2", accept_downloads=True) as page:
        nav(page, "Data lock and export")
        expect(page.get_by_role("heading", level=2, name=re.compile("The data are"))).to_contain_text("open")
        assert unlabelled_controls(page) == []

        # Freeze, with a wrong password first: refused, the error next to the password box, nothing changed.
        page.get_by_label("Action").select_option("freeze")
        page.get_by_label("Your password").fill("certainly not my password")
        page.get_by_role("button", name="Sign and apply", exact=True).click()
        password = page.get_by_label("Your password")
        expect(password).to_have_attribute("aria-invalid", "true")
        error = page.locator("div.field").filter(has=password).locator("p.error")
        expect(error).to_have_count(1)
        assert error.get_attribute("id") in (password.get_attribute("aria-describedby") or "").split()
        expect(page.get_by_role("alert")).to_be_visible()
        expect(page.get_by_role("heading", level=2, name=re.compile("The data are"))).to_contain_text("open")
        expect(password).to_have_value("")  # a password is never sent back to the browser

        page.get_by_label("Action").select_option("freeze")
        page.get_by_label("Your password").fill(PASSWORD)
        page.get_by_role("button", name="Sign and apply", exact=True).click()
        expect(page.get_by_role("status").filter(has_text="The data are now frozen.")).to_be_visible()

        page.get_by_label("Action").select_option("lock")
        page.get_by_label("Reason").fill("Last participant's data cleaned; database lock for the analysis.")
        page.get_by_label("Your password").fill(PASSWORD)
        page.get_by_role("button", name="Sign and apply", exact=True).click()
        expect(page.get_by_role("status").filter(has_text="The data are now locked.")).to_be_visible()
        expect(page.get_by_role("heading", level=2, name=re.compile("The data are"))).to_contain_text("locked")
        signatures = page.locator("ul.signatures li")
        expect(signatures).to_have_count(2)
        expect(signatures.filter(has_text="Priya Investigator")).to_have_count(2)
        expect(page.get_by_text("the export will be an interim bundle")).to_have_count(0)

        # Export: the progress page refreshes itself until the bundle is ready, then offers the download.
        page.get_by_role("button", name="Export").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Export hip-pt-clbp-locked.zip")
        download_link = page.get_by_role("link", name="Download hip-pt-clbp-locked.zip")
        expect(download_link).to_be_visible(timeout=60_000)
        expect(page.get_by_role("status")).to_contain_text("The locked bundle is ready")
        with page.expect_download() as dl:
            download_link.click()
        assert dl.value.suggested_filename == "hip-pt-clbp-locked.zip"
        target = tmp_path / dl.value.suggested_filename
        dl.value.save_as(target)
        assert target.read_bytes()[:4] == b"PK\x03\x04"
        manifest = read_manifest(target)
        assert manifest["kind"] == "locked", manifest

        # Back on the data page the export is listed with its own download link.
        page.get_by_role("link", name="Back to data state and export").click()
        expect(page.get_by_role("link", name="download")).to_have_count(1)

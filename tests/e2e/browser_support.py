"""Shared pieces of the browser tests (tests/e2e/test_browser_*.py): a live server with one demo user per role
and a known password, Debian's Chromium launched the one allowed way, and small page helpers.

    with BrowserServer() as live, chromium() as browser:
        with signed_in(browser, live, "coord") as page:
            page.goto(live.url("/t/hip-pt-clbp/screen"))

The users are created through the real CLI (`trialmgr user add ... --password-stdin`) before gunicorn starts,
next to the investigator and coordinators (with API tokens) that LiveServer sets up for itself. Only loopback
addresses are ever contacted: every page a test opens goes through `live.url()`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.live_server import HOST, REPO, TRIAL, ApiClient, LiveServer

BASE_API = f"/api/v1/trials/{TRIAL}"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ARTIFACTS = REPO / "test-artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
PASSWORD = "browser tests 4 trialmgr"
TABLET = {"width": 768, "height": 1024}
DESKTOP = {"width": 1280, "height": 900}
ARM_WORDS = ("HIP", "SPINE", "Hip-focused PT", "Spine-focused PT")


@dataclass(frozen=True)
class DemoUser:
    username: str
    full_name: str
    role: str          # as `--role` takes it: TRIAL:ROLE[@SITE]
    home: str          # the role's home page path

    @property
    def role_name(self) -> str:
        return self.role.partition(":")[2].partition("@")[0]


DEMO_USERS = {u.username: u for u in (
    DemoUser("coord", "Cora Coordinator", f"{TRIAL}:coordinator@DE", f"/t/{TRIAL}/coordinator"),
    DemoUser("monitor", "Mona Monitor", f"{TRIAL}:monitor", f"/t/{TRIAL}/monitor"),
    DemoUser("assessor", "Asa Assessor", f"{TRIAL}:assessor@DE", f"/t/{TRIAL}/assessor"),
    DemoUser("investigator2", "Priya Investigator", f"{TRIAL}:investigator", f"/t/{TRIAL}/investigator"),
    DemoUser("admin", "Ada Admin", f"{TRIAL}:admin", f"/t/{TRIAL}/admin"),
)}


class BrowserServer(LiveServer):
    """LiveServer plus the demo users above, all with PASSWORD. Two workers: the machines have few cores."""

    def __init__(self, **kw) -> None:
        kw.setdefault("workers", 2)
        kw.setdefault("threads", 2)
        super().__init__(**kw)

    def _setup_instance(self) -> None:
        # LiveServer sets itself up in one CLI batch; the demo users are appended to that batch rather than run
        # in a second one (an interpreter start and an app less per server). Appended at the end, they leave
        # the positions LiveServer reads its tokens from untouched.
        demo = [(["user", "add", u.username, "--name", u.full_name, "--role", u.role, "--password-stdin"],
                 PASSWORD + "\n") for u in DEMO_USERS.values()]
        own_batch = self.cli_batch

        def with_demo_users(commands):
            return own_batch([*commands, *demo])[: len(commands)]

        self.cli_batch = with_demo_users  # type: ignore[method-assign]
        try:
            super()._setup_instance()
        finally:
            del self.cli_batch

    def url(self, path: str) -> str:
        assert path.startswith("/"), path
        return self.base_url + path

    def api(self, site: str = "DE") -> ApiClient:
        """A JSON client acting as the coordinator at `site` (a token made by LiveServer)."""
        return self.client(self.tokens[site])


# -- the browser ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def chromium() -> Iterator:
    """Debian's Chromium through Playwright, launched exactly as DESIGN.md says; closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def new_page(browser, *, viewport: dict | None = None, accept_downloads: bool = False) -> Iterator:
    """A page in its own browser context (its own cookies), both closed on exit."""
    context = browser.new_context(viewport=viewport or DESKTOP, accept_downloads=accept_downloads)
    context.set_default_timeout(15_000)
    try:
        page = context.new_page()
        try:
            yield page
        finally:
            page.close()
    finally:
        context.close()


def sign_in(page, live: BrowserServer, username: str, password: str = PASSWORD) -> None:
    """Through the login form, as a person would; ends on the role's home page."""
    page.goto(live.url("/login"))
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(re.escape(DEMO_USERS[username].home) + "$"))


@contextlib.contextmanager
def signed_in(browser, live: BrowserServer, username: str, **kw) -> Iterator:
    with new_page(browser, **kw) as page:
        sign_in(page, live, username)
        yield page


# -- fixtures: each test module makes its own (`live = live_server_fixture()`), so the names stay local ------


def live_server_fixture():
    """A module-scoped fixture: one BrowserServer shared by every test of the module that defines it."""
    import pytest

    @pytest.fixture(scope="module")
    def live() -> Iterator[BrowserServer]:
        with BrowserServer() as server:
            yield server

    return live


def browser_fixture():
    """A module-scoped fixture: one Chromium for the module (fails, never skips, without Debian's Chromium)."""
    import pytest

    @pytest.fixture(scope="module")
    def browser() -> Iterator:
        if not Path(CHROMIUM).exists():
            pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (never `playwright install`); "
                        "python3 dev.py test installs it when run as root")
        with chromium() as b:
            yield b

    return browser


# -- page helpers ------------------------------------------------------------------------------------------


def utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def birth_date_for_age(years: int) -> str:
    """A date of birth that makes someone `years` old today (a third of a year past the birthday)."""
    return (utc_today() - dt.timedelta(days=int(365.25 * years) + 120)).isoformat()


def answer_yes_no(page, question: str, answer: str) -> None:
    page.get_by_role("group", name=question).get_by_label(answer, exact=True).check()


def fill_screening(page, *, sex: str = "F — Female", age: int = 72, pain_months: str = "12", mmse: str = "28",
                   yes: Sequence[str] = ()) -> None:
    """Answer the screening form: every yes/no question "No" except those in `yes`, language "Yes"."""
    page.get_by_role("group", name="Sex").get_by_role("radio", name=sex, exact=True).check()
    page.get_by_label("Date of birth").fill(birth_date_for_age(age))
    page.get_by_label("Duration of low back pain").fill(pain_months)
    page.get_by_label("MMSE score").fill(mmse)
    for question in ("Hip fracture with surgical repair (ever)", "Hip fracture without surgery in the last 15 years",
                     "Total hip replacement", "Spinal pathology other than osteoarthritis", "Needs a wheelchair",
                     "Severe visual or hearing impairment", "Red flags", "Leg pain greater than back pain"):
        answer_yes_no(page, question, "Yes" if question in yes else "No")
    answer_yes_no(page, "Can read and speak the study language (English)", "Yes")


_UNLABELLED = """() => {
  const out = [];
  for (const el of document.querySelectorAll('main input, main select, main textarea, main button')) {
    if (el.type === 'hidden') continue;
    const byFor = el.id && document.querySelector(`label[for="${CSS.escape(el.id)}"]`);
    const wrapped = el.closest('label');
    const aria = el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
    const ownText = el.tagName === 'BUTTON' && el.textContent.trim();
    const labelText = (byFor && byFor.textContent.trim()) || (wrapped && wrapped.textContent.trim());
    if (!(labelText || aria || ownText)) out.push(el.outerHTML.slice(0, 120));
  }
  return out;
}"""


def unlabelled_controls(page) -> list[str]:
    """The inputs, selects, text areas and buttons in <main> that have no accessible name (HTML excerpts)."""
    return page.evaluate(_UNLABELLED)


def nav(page, name: str) -> None:
    """Follow a link of the main menu and wait for the new page, so that what is read next is that page's."""
    with page.expect_navigation():
        page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True).click()


def follow(page, locator) -> None:
    """Click a link or submit button and wait until the page it leads to has loaded."""
    with page.expect_navigation():
        locator.click()


def no_horizontal_scroll(page) -> tuple[int, int]:
    """(scrollWidth, clientWidth) of the document; the page scrolls sideways when the first is larger."""
    return page.evaluate("() => [document.scrollingElement.scrollWidth, document.scrollingElement.clientWidth]")


def body_text(page) -> str:
    return page.locator("body").inner_text()


def assert_no_arm(page, where: str = "") -> None:
    """A blinded role must not see any arm, by code or by name, anywhere on the page: neither in the text shown
    (title included) nor in the HTML sent (hidden inputs, attributes, an SVG's <desc>)."""
    for what, text in (("text", body_text(page) + "\n" + page.title()), ("HTML", page.content())):
        found = [w for w in ARM_WORDS if re.search(rf"\b{re.escape(w)}\b", text)]
        assert not found, f"arm named in the {what} of {where or page.url}: {found}"


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# -- data made through the JSON API (the pages under test are elsewhere) -------------------------------------


def api_randomized_participant(live: BrowserServer, site: str = "DE", sex: str = "F") -> str:
    """Screen, enroll and randomize one eligible candidate through the API; returns the participant code."""
    from tests.support import eligible_answers

    today = utc_today().isoformat()
    with live.api(site) as api:
        r = api.post(f"{BASE_API}/screenings", {"answers": eligible_answers(sex=sex), "site": site})
        assert r.status == 201, r.body
        r = api.post(f"{BASE_API}/participants", {"screening": r.json()["id"], "consent_date": today,
                                                  "consent_version": "1.0"})
        assert r.status == 201, r.body
        code = r.json()["id"]
        r = api.post(f"{BASE_API}/participants/{code}/randomize")
        assert r.status in (200, 201), r.body
    return code


def api_save_form(live: BrowserServer, code: str, visit: str, form: str, values: dict, site: str = "DE") -> None:
    with live.api(site) as api:
        r = api.request("PUT", f"{BASE_API}/participants/{code}/visits/{visit}/forms/{form}",
                        {"values": values, "status": "complete", "visit_date": utc_today().isoformat()})
        assert r.status in (200, 201), r.body


def read_manifest(zip_path: Path) -> dict:
    import zipfile

    with zipfile.ZipFile(zip_path) as zf:
        name = next(n for n in zf.namelist() if n.rsplit("/", 1)[-1] == "manifest.json")
        return json.loads(zf.read(name))


__all__ = ["ARM_WORDS", "BASE_API", "BrowserServer", "CHROMIUM", "CHROMIUM_ARGS", "DEMO_USERS", "DESKTOP",
           "DemoUser", "HOST", "PASSWORD", "SCREENSHOTS", "TABLET", "TRIAL", "answer_yes_no",
           "api_randomized_participant", "api_save_form", "assert_no_arm", "birth_date_for_age", "body_text",
           "browser_fixture", "chromium", "fill_screening", "follow", "live_server_fixture", "nav", "new_page",
           "no_horizontal_scroll", "read_manifest", "screenshot", "sign_in", "signed_in", "unlabelled_controls",
           "utc_today"]

"""The Prefect UI in a real headless Chromium (Debian's, driven by Playwright): a requester files a standard
change in the deployment's run form, two approvers resume the suspended run with the codes from their
notifications, and the change ends completed in the database and in `changeflow show`.

Everything a person does goes through the UI; the test reads only what a person would read (the notification
text, the page) plus the database at the end. Screenshots go to docs/ for the README and docs/lifecycle.md.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from cli.dev import confirm_filing_in_form
from tests.flows.test_flows import notifications_for
from tests.helpers import wait_until

RUN_PAGE = re.compile(r"/runs/flow-run/[0-9a-f-]{36}")


def run_of_deployment(api_url: str, deployment: str, title: str) -> str | None:
    """The newest run of the deployment whose request has this title (None until the form's run exists)."""
    runs = httpx.post(f"{api_url}/flow_runs/filter", timeout=10, json={
        "deployments": {"id": {"any_": [deployment]}}, "sort": "EXPECTED_START_TIME_DESC", "limit": 20}).json()
    return next((run["id"] for run in runs
                 if run["parameters"].get("request", {}).get("title") == title), None)

pytestmark = pytest.mark.flows

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parents[2] / "docs"
playwright_api = pytest.importorskip("playwright.sync_api",
                                     reason="playwright is not installed (pip install -e '.[dev]')")
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def page():
    with chromium_page() as opened:
        yield opened


@contextmanager
def chromium_page():
    """A page in Debian's headless Chromium. Playwright's sync API runs an event loop while it is open, where
    Prefect's sync helpers (run_deployment) hand back coroutines: open it once the runs it looks at exist."""
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


def form_field(scope, label: str):
    """The schema-form property in `scope` (the page or a dialog) whose own label is `label` (Prefect marks
    optional fields '(Optional)')."""
    title = re.compile(rf"^{re.escape(label)}( \(Optional\))?$")
    page = getattr(scope, "page", scope)
    return scope.locator(".schema-form-property").filter(
        has=page.locator(":scope > .p-label__header .schema-form-property__label", has_text=title))


def fill_text(scope, label: str, value: str) -> None:
    field = form_field(scope, label)
    assert field.count() == 1, f"the form has no single field {label!r}"
    field.locator("textarea, input").first.fill(value)


def choose(page, label: str, option: str) -> None:
    form_field(page, label).locator("button.p-select-button__control").focus()
    page.keyboard.press("ArrowDown")  # opens Prefect's select; a click toggles it open and shut again
    page.get_by_role("option", name=option, exact=True).click()


def code_from_notification(flow_stack, key: str, person: str, *, event: str = "approval_requested",
                           label: str = "Your approval code", timeout_s: float = 60) -> str:
    """The personal code `person` was told in their `event` notification (written by the run as it reaches the
    gate). The stored row holds only the placeholder (issue 17): the outbox fills the code in as it sends, on
    the person's own channel. The code is the one their inbox carries."""
    deadline = time.monotonic() + timeout_s
    while True:
        texts = [n["body_text"] for n in notifications_for(flow_stack, key)
                 if n["event"] == event and n["recipient"] == person]
        if texts or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert texts, f"{person} was never sent {event} for {key}"
    from notifications import ACT_OF_MESSAGE

    code = flow_stack.services.approvals.approval_code_for(key, person, ACT_OF_MESSAGE[event])
    assert f"{label}: " in texts[0] and code not in texts[0]
    return code


def resume_as(page, ui: str, run_id: str, person: str, code: str, comment: str, screenshot: Path | None) -> None:
    resume_form(page, ui, run_id, "Still needed:", {"Approver": person, "Approval Code": code, "Comment": comment},
                screenshot)


def resume_form(page, ui: str, run_id: str, marker: str, fields: dict[str, str], screenshot: Path | None) -> None:
    """Open the run, press Resume, wait for the dialog showing `marker`, fill the fields and submit. On a
    failure, say what the page showed (a CI run has no screen to look at)."""
    try:
        _resume_form(page, ui, run_id, marker, fields, screenshot)
    except Exception as exc:
        shown = page.inner_text("body")[:1500] if not page.is_closed() else "(page closed)"
        raise AssertionError(f"{type(exc).__name__}: {exc}\n--- {page.url} showed:\n{shown}") from exc


def _resume_form(page, ui: str, run_id: str, marker: str, fields: dict[str, str], screenshot: Path | None) -> None:
    page.goto(f"{ui}/runs/flow-run/{run_id}")
    resume = page.get_by_role("button", name="Resume")
    for _ in range(6):  # the run page follows state changes; a reload covers a missed update
        try:
            resume.wait_for(timeout=15_000)
            break
        except playwright_api.TimeoutError:
            page.reload()
    resume.click()
    dialog = page.locator(".p-modal")
    dialog.get_by_text(marker).first.wait_for()
    for label, value in fields.items():
        fill_text(dialog, label, value)
    if screenshot:
        page.screenshot(path=str(screenshot))
    dialog.get_by_role("button", name="Submit").click()
    dialog.wait_for(state="hidden")


def test_standard_change_filed_and_approved_in_the_prefect_ui(flow_stack, page):
    ui = flow_stack.api_url.removesuffix("/api")
    deployment = httpx.get(f"{flow_stack.api_url}/deployments/name/change-request/submit").json()["id"]
    DOCS.mkdir(exist_ok=True)

    page.goto(f"{ui}/deployments/deployment/{deployment}/run")
    choose(page, "Type", "standard")
    fill_text(page, "Title", "Rotate the payments API signing key")
    fill_text(page, "Service", "payments")
    fill_text(page, "Requester", "grace")
    fill_text(page, "Implementation Plan", "1. publish the new key\n2. switch signing\n3. retire the old key")
    fill_text(page, "Rollback Plan", "switch signing back to the old key")
    fill_text(page, "Test Evidence", "staging rotation rehearsal, run 4410 green")  # the type requires it (issue 31)
    # Risk is never assumed (issue 30): the questionnaire is open with nothing answered, and the form will not
    # submit while a question is left.
    choose(page, "Users Affected", "many")
    page.get_by_role("button", name="Submit").click()
    page.get_by_text("'tested_in_staging' is a required property").first.wait_for()
    for question, answer in (("Complexity", "medium"), ("Backout Difficulty", "easy"), ("Tested In Staging", "yes"),
                             ("Touches Data", "no")):
        choose(page, question, answer)
    run_name = f"rotate-signing-key-{uuid.uuid4().hex[:6]}"
    page.locator(".flow-run-name-input input").fill(run_name)
    page.locator(".flow-run-name-input").scroll_into_view_if_needed()
    page.screenshot(path=str(DOCS / "ui-run-form.png"))
    page.get_by_role("button", name="Submit").click()
    # The form sends the browser on to the deployment's page. Its toast links to the new run, but the page takes
    # a click that lands while it settles its tab into the address back, and the toast goes with the page it was
    # on (twice in twelve clean-clone runs, the second time after five clicks): the run the form created is found
    # through the API instead, as a person finds it in the deployment's Runs tab, and opened.
    run_id = wait_until(lambda: run_of_deployment(flow_stack.api_url, deployment, "Rotate the payments API signing "
                                                  "key"), 60, "the run the form created")
    page.goto(f"{ui}/runs/flow-run/{run_id}")
    page.wait_for_url(RUN_PAGE)

    # The form carries no identity: nothing goes to the approvers until grace confirms that she filed it, with
    # the code sent to her for that (issue 27).
    filed = flow_stack.wait_for(run_id, lambda c: c.state == "submitted", what="the filing")
    resume_form(page, ui, run_id, "confirms that they filed it", {
        "Requester": "grace", "Approval Code": code_from_notification(
            flow_stack, filed.key, "grace", event="filing_received",
            label="Your personal code for confirming this filing")}, DOCS / "ui-filing-dialog.png")
    change = flow_stack.wait_for(run_id, lambda c: c.state == "awaiting_approval", what="the approval request")
    assert (change.title, change.requester, change.type) == ("Rotate the payments API signing key", "grace",
                                                             "standard")
    resume_as(page, ui, run_id, "alice", code_from_notification(flow_stack, change.key, "alice"),
              "plan and rollback look right", DOCS / "ui-resume-dialog.png")
    flow_stack.wait_for(change.key, lambda c: len(flow_stack.services.approvals.decided_by(c.key)) == 1,
                        what="alice's approval")
    resume_as(page, ui, run_id, "bob", code_from_notification(flow_stack, change.key, "bob"), "reviewed", None)

    # No automation: grace, its requester, confirms it implemented and then verified, with her own code.
    flow_stack.wait_for(change.key, lambda c: c.state == "implementing", timeout_s=90, what="implementation")
    grace = code_from_notification(flow_stack, change.key, "grace", event="work_needed",
                                   label="Your personal code for this change")
    resume_form(page, ui, run_id, "needs a person: implemented",
                {"Person": "grace", "Approval Code": grace, "Note": "new key published, signing switched"}, None)
    flow_stack.wait_for(change.key, lambda c: c.state == "verifying", timeout_s=90, what="verification")
    resume_form(page, ui, run_id, "needs a person: verified",
                {"Person": "grace", "Approval Code": grace, "Note": "signatures verify with the new key"}, None)

    done = flow_stack.wait_for(change.key, lambda c: c.outcome == "succeeded" and c.state == "closed",
                               timeout_s=90, what="completion")
    assert sorted(flow_stack.services.approvals.decided_by(done.key)) == ["alice", "bob"]
    filed = flow_stack.services.changes.list_changes(requester="grace", limit=500)
    assert [c.key for c in filed if c.title == "Rotate the payments API signing key"] == [done.key]
    assert any(e.to_state == "completed" for e in flow_stack.services.changes.view(done.key).events)
    page.goto(f"{ui}/runs/flow-run/{run_id}")
    page.get_by_text("Finished in state Closed").first.wait_for()  # named for its change (issue 30)
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(DOCS / "ui-finished-run.png"))

    shown = subprocess.run([str(Path(sys.executable).parent / "changeflow"), "show", done.key],
                           env=flow_stack.stack.env, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "completed" in shown.stdout and "alice" in shown.stdout and "bob" in shown.stdout


@pytest.fixture
def approval_endpoint(flow_stack):
    """The approval endpoint where the flow stack's notifications point (`changeflow up` runs it beside the
    server); it resumes runs through this process's Prefect client, like the CLI."""
    import threading

    import uvicorn

    from endpoint import create_app

    port = int(flow_stack.approval_url.rsplit(":", 1)[1])
    app = create_app(flow_stack.services, slack_signing_secret=None, public_url=flow_stack.approval_url)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield flow_stack.approval_url
    server.should_exit = True
    thread.join(10)


def link_in_inbox(flow_stack, key: str) -> str:
    """Alice's approval link, from the message her own channel (a file: her e-mail here) received."""
    import json

    inbox = flow_stack.home / "inbox" / "alice.txt"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in reversed(inbox.read_text().splitlines() if inbox.exists() else []):
            message = json.loads(line)
            found = re.search(r"(http://\S+/a/\S+)", message["text"])
            if message["change"] == key and message["event"] == "approval_requested" and found:
                return found.group(1)
        time.sleep(0.2)
    raise AssertionError(f"no approval link for {key} in alice's inbox")


def test_an_approver_acts_from_the_link_in_her_notification_and_a_wrong_code_is_shown_at_once(
        flow_stack, page, approval_endpoint):
    from tests.helpers import standard_request

    ui = flow_stack.api_url.removesuffix("/api")
    # Filed as the run form files it (Prefect's sync client would find Playwright's event loop running here).
    deployment = httpx.get(f"{flow_stack.api_url}/deployments/name/change-request/submit").json()["id"]
    created = httpx.post(f"{flow_stack.api_url}/deployments/{deployment}/create_flow_run", json={
        # A service of its own: the change stays at its manual work gate when the test ends, and an undated change
        # being implemented holds the session's release window against every later one on a related service.
        "parameters": {"request": standard_request(title="Approved from the e-mail link", service="link-approved")}})
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    confirm_filing_in_form(flow_stack.services, flow_stack.api_url, run_id)  # grace confirms she filed it
    change = flow_stack.wait_for(run_id, lambda c: c.state == "awaiting_approval", what="the approval request")

    # A wrong code in the Prefect UI's Resume dialog: Prefect's toast says "resumed", the run page says why not.
    resume_as(page, ui, run_id, "bob", "AAAA-BBBB-CCCC", "typo", None)
    page.get_by_text(re.compile(r"wrong approval code for bob")).first.wait_for(timeout=60_000)
    assert flow_stack.services.approvals.decided_by(change.key) == []

    # Alice opens the link from her own message; nothing is recorded until she presses a button.
    link = link_in_inbox(flow_stack, change.key)
    page.goto(link)
    page.get_by_text("Approved from the e-mail link").first.wait_for()
    assert flow_stack.services.approvals.decided_by(change.key) == []
    page.get_by_role("button", name="Approve").click()
    page.get_by_text("approved by Alice Moreau").first.wait_for()
    assert flow_stack.services.approvals.decided_by(change.key) == ["alice"]
    # The link works once: opened again, it says so and offers no form.
    page.goto(link)
    page.get_by_text("this link was already used").first.wait_for()
    assert page.get_by_role("button", name="Approve").count() == 0

    # Bob answers in the Resume dialog with his code; the run continues past its gate on its own.
    resume_as(page, ui, run_id, "bob", flow_stack.services.approvals.approval_code_for(change.key, "bob"), "ok",
              None)
    flow_stack.wait_for(change.key, lambda c: c.state not in ("awaiting_approval", "approved"), timeout_s=90,
                        what="the run past its gate")

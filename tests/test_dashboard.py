"""The web dashboard (/ui) in a real browser: headless Chromium (Debian's package,
installed by scripts/browser-host.sh) driven by Playwright, against a real local stack.
A user signs in with a token, submits through the CLI, watches the job appear, opens
it, sees its output arrive and its state turn F; another user does not see it; the
token never appears in a URL. The screenshots in docs/images/ are taken here, with
PKBS_SCREENSHOTS=docs/images (`make screenshots`); otherwise they go to the test's
temporary directory."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.stackutil import Stack, submit

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]'")
expect = sync_api.expect

CHROMIUM = os.environ.get("PKBS_TEST_CHROMIUM", "/usr/bin/chromium")
WAIT_MS = 20_000  # the longest a page may take to show what a test waits for
expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def ui_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("pkbs-ui"))
    s.up(workers=1, slots=2)
    yield s
    s.down()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: the dashboard tests need Debian's chromium "
                    "(scripts/browser-host.sh installs it; apt-get install chromium)")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, ui_stack: Stack) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 640},
                                  base_url=ui_stack.state()["endpoint"])
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    yield tab
    context.close()


def sign_in(page: Any, token: str) -> None:
    page.goto("/ui")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#overview")).to_be_visible()


def attribute(page: Any, name: str) -> Any:
    return page.locator(f'#attributes tr:has(td:text-is("{name}")) td').nth(1)


def has_live_output(stack: Stack, token: str, job_id: str) -> bool:
    """Whether this dispatcher has the live output route (GET /v1/jobs/{id}/output)."""
    url = f"{stack.state()['endpoint']}/v1/jobs/{job_id}/output"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10):
            return True
    except urllib.error.HTTPError as err:
        return not (err.code == 404 and "error" not in json.loads(err.read() or b"{}"))


def test_user_watches_a_job_from_submission_to_its_end(
    page: Any, ui_stack: Stack, tmp_path: Path
) -> None:
    token = ui_stack.token_for("alice")
    env = {"PKBS_ENDPOINT": ui_stack.state()["endpoint"], "PKBS_TOKEN": token}
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    sign_in(page, token)
    assert token not in page.url
    go = tmp_path / "go"
    script = ("echo hello from the dashboard test\n"
              f"for i in $(seq 1 600); do [ -e {go} ] && break; sleep 0.05; done\n"
              "echo bye\n")
    job_id = submit(ui_stack, "-N", "watched", input=script, env=env, cwd=tmp_path)

    row = page.locator("#jobs tr", has=page.locator(f'a:text-is("{job_id}")'))
    expect(row).to_contain_text("watched")
    expect(row.locator(".state")).to_have_text("R")
    # The worker running it lists it.
    expect(page.locator("#workers")).to_contain_text(job_id)
    images = Path(os.environ.get("PKBS_SCREENSHOTS") or tmp_path)
    page.screenshot(path=str(images / "dashboard-overview.png"))

    row.locator("a").click()
    expect(page.locator("#job-title")).to_have_text(job_id)
    expect(attribute(page, "Job_Name")).to_have_text("watched")
    expect(attribute(page, "job_state")).to_have_text("R")
    if has_live_output(ui_stack, token, job_id):
        # Its output while it runs, then its end.
        expect(page.locator("#output-mode")).to_have_text("(live)")
        expect(page.locator("#output")).to_contain_text("hello from the dashboard test")
        expect(attribute(page, "job_state")).to_have_text("R")
    else:
        expect(page.locator("#output-mode")).to_have_text("(shown when the job has finished)")
    go.touch()
    expect(attribute(page, "job_state")).to_have_text("F")
    expect(attribute(page, "Exit_status")).to_have_text("0")
    expect(page.locator("#output")).to_have_text("hello from the dashboard test\nbye\n")
    page.screenshot(path=str(images / "dashboard-job.png"))

    # Self-contained: every request went to the dispatcher, none carried the token.
    endpoint = ui_stack.state()["endpoint"]
    assert requests and all(url.startswith(endpoint + "/") for url in requests), requests
    assert not [url for url in requests if token in url]
    assert (images / "dashboard-job.png").stat().st_size > 0


def test_other_users_jobs_are_not_shown(page: Any, ui_stack: Stack) -> None:
    alice = ui_stack.as_user("alice")
    bob_token = ui_stack.token_for("bob")
    hidden = submit(ui_stack, "-N", "alices", input="true\n", env=alice)
    own = submit(ui_stack, "-N", "bobs", input="true\n",
                 env={**alice, "PKBS_TOKEN": bob_token})
    sign_in(page, bob_token)
    expect(page.locator("#jobs")).to_contain_text(own)
    expect(page.locator("#jobs")).not_to_contain_text(hidden)
    page.goto(f"/ui/#/job/{hidden}")
    expect(page.locator("#job-error")).to_contain_text("Unauthorized")
    expect(page.locator("#attributes")).to_be_empty()


def test_filters_and_admin_view(page: Any, ui_stack: Stack) -> None:
    alice = ui_stack.as_user("alice")
    carol = {**alice, "PKBS_TOKEN": ui_stack.token_for("carol")}
    done = submit(ui_stack, "-N", "carols", input="true\n", env=carol)
    held = submit(ui_stack, "-h", "-N", "carolheld", input="true\n", env=carol)
    ui_stack.wait_state(done, "F")
    sign_in(page, admin_token(ui_stack))
    jobs = page.locator("#jobs")
    expect(jobs).to_contain_text(held)  # the operator sees everybody's
    page.select_option("#filter-state", "H")
    expect(page).to_have_url(re.compile(r"#/\?state=H$"))
    expect(jobs).to_contain_text(held)
    expect(jobs).not_to_contain_text(done)
    page.select_option("#filter-state", "")
    page.fill("#filter-user", "carol")
    page.press("#filter-user", "Enter")
    expect(page).to_have_url(re.compile(r"#/\?user=carol$"))
    owners = jobs.locator("tbody tr td:nth-child(3)")
    expect(owners).to_have_count(2)  # carol's two, of everybody's
    expect(owners).to_have_text([re.compile("^carol@"), re.compile("^carol@")])
    expect(jobs).to_contain_text(done)
    queues = page.locator("#queues")
    expect(queues.locator('tr:has(td:text-is("workq")) td').nth(5)).not_to_have_text("0")


def test_a_bad_token_is_refused_and_kept_nowhere(page: Any, ui_stack: Stack) -> None:
    reply = page.goto("/ui/")
    assert "default-src 'none'" in reply.headers["content-security-policy"]
    page.fill("#token", "not-a-token")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("Invalid")
    expect(page.locator("#overview")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0
    assert "not-a-token" not in page.url


def admin_token(stack: Stack) -> str:
    config: dict[str, str] = json.loads((stack.home / "client.json").read_text())
    return config["token"]

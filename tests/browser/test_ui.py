"""The webhook management UI in a real browser (Debian's Chromium, headless, via Playwright)
against the local runner and real receivers on 127.0.0.1.

Controls are found the way a screen reader announces them (role + accessible name, label), so
a missing or wrong label fails a test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import urllib.request

from playwright.sync_api import expect

from conftest import SCREENSHOTS, Receiver, Runner, axe_check, new_page, sign_in

GUIDE_PAYLOAD = {
    "id": "1",
    "workflowDefinitionId": "1",
    "status": "COMPLETED",
    "startTime": "2025-05-21T21:26:58.211Z",
    "endTime": "2025-05-21T21:27:09.442Z",
}
ASSETS = {
    "/": "text/html; charset=utf-8",
    "/ui/app.js": "text/javascript; charset=utf-8",
    "/ui/app.css": "text/css; charset=utf-8",
    "/ui/icon.svg": "image/svg+xml",
}


def send_event(runner, token, event="workflow.execution.completed", payload=None):
    status, body = runner.api("POST", "/api/events", token, {"event": event, "payload": payload or GUIDE_PAYLOAD})
    assert status == 202, body
    return body


def create_webhook(runner, token, url, events, secret="s3cret-for-tests"):
    status, body = runner.api("POST", "/api/webhooks", token, {"url": url, "events": events, "secret": secret})
    assert status == 201, body
    return body


def wait_until(predicate, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_page_and_assets_are_served_with_types_and_a_strict_csp(runner):
    total = 0
    for path, content_type in ASSETS.items():
        with urllib.request.urlopen(runner.base + path, timeout=5) as res:
            body = res.read()
            total += len(body)
            assert res.status == 200
            assert res.headers["Content-Type"] == content_type
            csp = res.headers["Content-Security-Policy"]
            assert "default-src 'self'" in csp and "script-src 'self'" in csp and "style-src 'self'" in csp
            assert "unsafe-inline" not in csp
            assert res.headers["X-Content-Type-Options"] == "nosniff"
    assert total < 100 * 1024


def test_banner_link_signs_in_with_the_token_in_the_fragment(runner, page):
    banner = runner.banner()
    m = re.search(r"UI \(signs you in\): (http://127\.0\.0\.1:\d+/#token=(\S+))", banner)
    assert m, banner
    assert "?token=" not in banner
    page.goto(m.group(1))
    expect(page.get_by_role("heading", name="Webhooks", level=1)).to_be_visible()
    # The token left the address bar (and history) and lives in this tab's session storage.
    assert "token" not in page.url
    assert page.evaluate("sessionStorage.getItem('webhooks.token')") == m.group(2)
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def test_sign_in_form_shows_the_api_problem_then_signs_in_and_out(runner, page_and_errors):
    page, errors = page_and_errors
    errors.allow_http(401)
    page.goto(runner.base + "/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    token_field = page.get_by_label("API token")
    token_field.fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    status, problem = runner.api("GET", "/api/event-types", "not-a-token")
    assert status == 401
    expect(token_field).to_have_accessible_description(f"{problem['title']}: {problem['detail']}")
    expect(token_field).to_have_attribute("aria-invalid", "true")

    token = runner.token()
    token_field.fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Webhooks", level=1)).to_be_visible()
    expect(page.get_by_text("No webhooks yet")).to_be_visible()
    page.reload()
    expect(page.get_by_role("heading", name="Webhooks", level=1)).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('webhooks.token')") is None


def test_create_test_deliver_disable_delete(runner, page, ok_receiver):
    token = runner.token()
    sign_in(page, runner, token)
    url = ok_receiver.url("/life")

    # New webhook: URL, a generated secret, two event types picked by their names.
    page.get_by_role("button", name="New webhook").click()
    form = page.get_by_role("dialog", name="New webhook")
    form.get_by_label("URL").fill(url)
    form.get_by_role("button", name="Generate secret").click()
    secret = form.get_by_label("Secret", exact=True).input_value()
    assert secret.startswith("whsec_") and len(secret) >= 44
    # Grouped by the guide's categories, each with its description.
    execution = form.get_by_role("group", name="Workflow Execution Events")
    expect(execution.get_by_role("checkbox")).to_have_count(4)
    completed = execution.get_by_role("checkbox", name="workflow.execution.completed", exact=True)
    expect(completed).to_have_accessible_description("A workflow execution has completed successfully")
    completed.check()
    form.get_by_role("group", name="Task Execution Events").get_by_role(
        "checkbox", name="task.execution.failed", exact=True
    ).check()
    expect(form.get_by_role("checkbox")).to_have_count(24)
    form.get_by_role("button", name="Create webhook").click()

    # The secret is shown once.
    shown = page.get_by_role("dialog", name="Save your signing secret")
    expect(shown.get_by_label("Signing secret")).to_have_value(secret)
    shown.get_by_role("button", name="Done").click()
    expect(page.get_by_role("heading", name=url, level=1)).to_be_visible()
    expect(page.locator("#detail-badge")).to_have_text("Active")
    status, listed = runner.api("GET", "/api/webhooks", token)
    assert [w["url"] for w in listed] == [url]
    webhook = listed[0]
    assert sorted(webhook["events"]) == ["task.execution.failed", "workflow.execution.completed"]
    assert "secret" not in webhook and webhook["hasSecret"] is True

    # Send test event to the registered webhook: the guide's example payload, signed with the
    # stored secret (the user does not type it again).
    page.get_by_role("button", name="Send test event").click()
    test = page.get_by_role("dialog", name="Send test event")
    expect(test).to_contain_text(f"To {url}, signed with its secret")
    expect(test.get_by_label("URL")).to_be_hidden()
    expect(test.get_by_label("Secret")).to_be_hidden()
    expect(test.get_by_label("Event type")).to_have_value("workflow.execution.completed")
    assert json.loads(test.get_by_label("Payload").input_value()) == GUIDE_PAYLOAD
    test.get_by_role("button", name="Send test").click()
    expect(test.get_by_role("status")).to_contain_text("Webhook delivered successfully")
    expect(test.get_by_role("status")).to_contain_text("HTTP 200")
    got = ok_receiver.to("/life")
    assert len(got) == 1
    assert got[0]["headers"]["x-webhook-event"] == "workflow.execution.completed"
    expected = hmac.new(secret.encode(), got[0]["body"], hashlib.sha256).hexdigest()
    assert got[0]["headers"]["x-webhook-signature"] == expected
    assert json.loads(got[0]["body"])["payload"] == GUIDE_PAYLOAD
    test.get_by_role("button", name="Close").first.click()
    expect(test).to_be_hidden()

    # An event through the API shows up as a delivery (auto-refresh), with its attempt.
    expect(page.get_by_text("No deliveries yet.")).to_be_visible()
    accepted = send_event(runner, token)
    deliveries = page.get_by_role("list", name="Deliveries")
    item = deliveries.get_by_role("listitem").first
    expect(item).to_contain_text("succeeded", timeout=10000)
    expect(item).to_contain_text("workflow.execution.completed")
    item.locator("summary").click()
    table = item.get_by_role("table")
    expect(table.get_by_role("row")).to_have_count(2)
    row = table.get_by_role("row").nth(1)
    expect(row).to_contain_text("200")
    expect(row).to_contain_text("Webhook delivered successfully")
    expect(row).to_contain_text("ok: received")
    expect(row).to_contain_text(re.compile(r"\d+ ms"))
    expect(item).to_contain_text(accepted["id"])
    assert len(ok_receiver.to("/life")) == 2
    # The stored event's payload, on request: what the receiver got.
    item.get_by_role("button", name="Show payload").click()
    shown_payload = item.get_by_label(f"Payload of {accepted['id']}")
    expect(shown_payload).to_contain_text('"workflowDefinitionId"')
    assert json.loads(shown_payload.inner_text()) == json.loads(ok_receiver.to("/life")[1]["body"])["payload"]
    expect(item.get_by_role("button", name="Hide payload")).to_have_attribute("aria-expanded", "true")
    page.screenshot(path=str(SCREENSHOTS / "payload-1440.png"), full_page=True)

    # Disable: the badge and the button say so, and events no longer arrive.
    page.get_by_role("button", name="Disable").click()
    expect(page.get_by_role("button", name="Enable")).to_be_visible()
    expect(page.locator("#detail-badge")).to_have_text("Disabled")
    assert runner.api("GET", f"/api/webhooks/{webhook['id']}", token)[1]["active"] is False
    send_event(runner, token)
    time.sleep(1.5)
    assert len(ok_receiver.to("/life")) == 2
    expect(deliveries.get_by_role("listitem")).to_have_count(1)

    # The list shows it disabled, with its last delivery.
    page.get_by_role("link", name="Webhooks", exact=True).last.click()
    row = page.get_by_role("listitem").filter(has=page.get_by_role("link", name=url))
    expect(row).to_contain_text("Disabled")
    expect(row).to_contain_text("succeeded")

    # Delete, with a confirmation.
    row.get_by_role("link", name=url).click()
    page.get_by_role("button", name="Delete").click()
    confirm = page.get_by_role("dialog", name="Delete this webhook?")
    expect(confirm).to_contain_text(url)
    confirm.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("heading", name=url, level=1)).to_be_visible()
    page.get_by_role("button", name="Delete").click()
    confirm.get_by_role("button", name="Delete webhook").click()
    expect(page.get_by_role("heading", name="Webhooks", level=1)).to_be_visible()
    expect(page.get_by_text("No webhooks yet")).to_be_visible()
    assert runner.api("GET", f"/api/webhooks/{webhook['id']}", token)[0] == 404


def test_a_failing_receivers_attempts_are_shown(runner, page, failing_receiver):
    token = runner.token()
    url = failing_receiver.url("/down")
    webhook = create_webhook(runner, token, url, ["system.error"])
    send_event(runner, token, "system.error", {"message": "disk full"})
    sign_in(page, runner, token)
    page.get_by_role("link", name=url).click()
    item = page.get_by_role("list", name="Deliveries").get_by_role("listitem").first
    # Three attempts (RETRY_SCHEDULE_SECONDS=1,1), then failed.
    expect(item).to_contain_text("failed", timeout=15000)
    expect(item).to_contain_text("3 attempts")
    item.locator("summary").click()
    rows = item.get_by_role("table").get_by_role("row")
    expect(rows).to_have_count(4)
    for i in range(1, 4):
        expect(rows.nth(i)).to_contain_text("500")
        expect(rows.nth(i)).to_contain_text("receiver is down for maintenance")
    delivery = runner.api("GET", f"/api/webhooks/{webhook['id']}/deliveries", token)[1][0]
    assert delivery["status"] == "failed" and len(delivery["attempts"]) == 3
    expect(rows.nth(1)).to_contain_text(delivery["attempts"][0]["message"])
    assert len(failing_receiver.to("/down")) == 3
    # The test event reports the failure as the API words it.
    page.get_by_role("button", name="Send test event").click()
    test = page.get_by_role("dialog", name="Send test event")
    test.get_by_role("button", name="Send test").click()
    expect(test.get_by_role("status")).to_contain_text("Not delivered · HTTP 500")
    status, result = runner.api(
        "POST", f"/api/webhooks/{webhook['id']}/test", token, {"event": "system.error", "payload": GUIDE_PAYLOAD}
    )
    assert status == 200 and result["success"] is False
    expect(test.get_by_role("status")).to_contain_text(result["message"])
    assert len(failing_receiver.to("/down")) == 5


def test_api_problems_are_shown_next_to_the_fields_they_name(runner, page_and_errors):
    page, errors = page_and_errors
    errors.allow_http(422)
    token = runner.token()
    sign_in(page, runner, token)
    page.get_by_role("button", name="New webhook").click()
    form = page.get_by_role("dialog", name="New webhook")
    form.get_by_label("URL").fill("ftp://example.com/hook")
    form.get_by_role("button", name="Create webhook").click()
    status, problem = runner.api("POST", "/api/webhooks", token, {"url": "ftp://example.com/hook", "events": []})
    assert status == 422
    by_field = {e["field"]: e["message"] for e in problem["errors"]}
    assert set(by_field) == {"url", "events"}
    url_field = form.get_by_label("URL")
    expect(url_field).to_have_accessible_description(re.compile(re.escape(by_field["url"])))
    expect(url_field).to_have_attribute("aria-invalid", "true")
    expect(url_field).to_be_focused()
    expect(form.get_by_role("group", name="Events", exact=True)).to_have_accessible_description(by_field["events"])
    # Fixing the fields clears the messages.
    form.get_by_label("URL").fill("http://127.0.0.1:9/hook")
    form.get_by_role("checkbox", name="system.info", exact=True).check()
    form.get_by_role("button", name="Create webhook").click()
    # No secret was typed, so the API generated one: it is shown once, in its dialog.
    shown = page.get_by_role("dialog", name="Save your signing secret")
    expect(shown.get_by_label("Signing secret")).to_have_value(re.compile(r"^whsec_"))
    shown.get_by_role("button", name="Done").click()
    expect(page.get_by_role("heading", name="http://127.0.0.1:9/hook", level=1)).to_be_visible()

    # The test form: a payload that is not JSON is refused next to its field; an event type the
    # API does not know is the API's 422, next to the event field.
    page.get_by_role("button", name="Send test event").click()
    test = page.get_by_role("dialog", name="Send test event")
    test.get_by_label("Payload").fill("{not json")
    test.get_by_role("button", name="Send test").click()
    expect(test.get_by_label("Payload")).to_have_accessible_description(re.compile("is not valid JSON"))
    test.get_by_label("Payload").fill("[1]")
    test.get_by_role("button", name="Send test").click()
    webhook_id = runner.api("GET", "/api/webhooks", token)[1][0]["id"]
    status, problem = runner.api(
        "POST", f"/api/webhooks/{webhook_id}/test", token, {"event": "system.error", "payload": [1]}
    )
    assert status == 422
    message = {e["field"]: e["message"] for e in problem["errors"]}["payload"]
    expect(test.get_by_label("Payload")).to_have_accessible_description(re.compile(re.escape(message)))


def test_edit_keeps_the_secret_and_wildcards(runner, page, ok_receiver):
    token = runner.token()
    webhook = create_webhook(runner, token, ok_receiver.url("/edit"), ["task.*", "system.error"])
    sign_in(page, runner, token)
    page.get_by_role("link", name=ok_receiver.url("/edit")).click()
    page.get_by_role("button", name="Edit").click()
    form = page.get_by_role("dialog", name="Edit webhook")
    expect(form.get_by_role("checkbox", name="system.error", exact=True)).to_be_checked()
    expect(form.get_by_role("checkbox", name="task.*", exact=True)).to_be_checked()
    expect(form.get_by_label("Active", exact=True)).to_be_checked()
    form.get_by_label("URL").fill(ok_receiver.url("/edited"))
    form.get_by_role("checkbox", name="system.error", exact=True).uncheck()
    form.get_by_role("checkbox", name="milestone.achieved", exact=True).check()
    form.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("heading", name=ok_receiver.url("/edited"), level=1)).to_be_visible()
    saved = runner.api("GET", f"/api/webhooks/{webhook['id']}", token)[1]
    assert saved["url"] == ok_receiver.url("/edited")
    assert sorted(saved["events"]) == ["milestone.achieved", "task.*"]
    assert saved["hasSecret"] is True
    expect(page.get_by_role("dialog", name="Save your signing secret")).to_have_count(0)


def test_keyboard_only(runner, page, ok_receiver):
    token = runner.token()
    create_webhook(runner, token, ok_receiver.url("/keys"), ["system.info"])
    send_event(runner, token, "system.info", {"n": 1})
    sign_in(page, runner, token)
    # Tab to "New webhook", open it with Enter, Escape closes it and focus returns.
    new = page.get_by_role("button", name="New webhook")
    for _ in range(12):
        page.keyboard.press("Tab")
        if new.evaluate("el => el === document.activeElement"):
            break
    expect(new).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog", name="New webhook").get_by_label("URL")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog", name="New webhook")).to_be_hidden()
    expect(new).to_be_focused()
    # The webhook link opens its page; a delivery opens with Enter.
    link = page.get_by_role("link", name=ok_receiver.url("/keys"))
    link.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name=ok_receiver.url("/keys"), level=1)).to_be_focused()
    summary = page.get_by_role("list", name="Deliveries").locator("summary").first
    expect(summary).to_contain_text("succeeded", timeout=10000)
    summary.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("list", name="Deliveries").get_by_role("table")).to_be_visible()
    # The delivery's Show payload and Resend are the next stops after its summary.
    page.keyboard.press("Tab")
    expect(page.get_by_role("list", name="Deliveries").get_by_role("button", name="Show payload")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("list", name="Deliveries").get_by_role("button", name="Hide payload")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_role("list", name="Deliveries").get_by_role("button", name="Resend")).to_be_focused()
    # Rotate secret opens on the keyboard, starts in its first field, and Escape gives focus back.
    rotate = page.get_by_role("button", name="Rotate secret")
    rotate.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Rotate secret")
    expect(dialog.get_by_label("New secret", exact=True)).to_be_focused()
    page.keyboard.press("Tab")
    expect(dialog.get_by_role("button", name="Generate new secret")).to_be_focused()
    page.keyboard.press("Tab")
    expect(dialog.get_by_label("Old secret keeps signing for")).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(rotate).to_be_focused()


def test_events_view_lists_events_with_payload_and_deliveries(runner, page, ok_receiver):
    token = runner.token()
    url = ok_receiver.url("/events-view")
    webhook = create_webhook(runner, token, url, ["system.info"])
    info = send_event(runner, token, "system.info", {"n": 1, "note": "for the events view"})
    assert wait_until(lambda: [d["status"] for d in deliveries_of(runner, token, webhook["id"])] == ["succeeded"])
    time.sleep(0.01)
    lonely = send_event(runner, token, "milestone.achieved", {"milestone": "nobody listens"})
    sign_in(page, runner, token)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Events").click()
    expect(page.get_by_role("heading", name="Events", level=1)).to_be_focused()
    events = page.get_by_role("list", name="Events")
    items = events.get_by_role("listitem").filter(has=page.locator("summary"))
    expect(items).to_have_count(2)
    # Newest first: the event no webhook subscribes to, then the delivered one.
    expect(items.nth(0)).to_contain_text("milestone.achieved")
    expect(items.nth(1)).to_contain_text("system.info")
    items.nth(0).locator("summary").click()
    expect(items.nth(0)).to_contain_text("No webhook subscribed to it.")
    expect(items.nth(0)).to_contain_text(lonely["id"])
    items.nth(1).locator("summary").click()
    payload = items.nth(1).get_by_label(f"Payload of {info['id']}")
    expect(payload).to_contain_text("for the events view")
    assert json.loads(payload.inner_text()) == {"n": 1, "note": "for the events view"}
    delivered = items.nth(1).get_by_role("list", name=f"Deliveries of {info['id']}").get_by_role("listitem")
    expect(delivered).to_have_count(1)
    expect(delivered).to_contain_text("succeeded")
    expect(delivered).to_contain_text("1 attempt")
    # The type filter goes to the API; the webhook link opens the webhook.
    view = page.get_by_role("region", name="Events")
    view.get_by_label("Event type").select_option("system.info")
    view.get_by_role("button", name="Show", exact=True).click()
    expect(items).to_have_count(1)
    expect(items.first).to_contain_text("system.info")
    items.first.locator("summary").click()
    items.first.get_by_role("link", name=webhook["id"]).click()
    expect(page.get_by_role("heading", name=url, level=1)).to_be_visible()


def populate(runner, ok_receiver, failing_receiver):
    """A tenant with a few webhooks and deliveries in every final state, for looks and axe."""
    token = runner.token()
    ok = create_webhook(
        runner, token, ok_receiver.url("/orders"), ["workflow.execution.completed", "workflow.execution.failed", "task.execution.failed"]
    )
    bad = create_webhook(runner, token, failing_receiver.url("/billing"), ["system.error", "system.warning"])
    off = create_webhook(runner, token, ok_receiver.url("/archive"), ["*"])
    runner.api("PUT", f"/api/webhooks/{off['id']}", token, {"active": False})
    send_event(runner, token)
    send_event(runner, token, "workflow.execution.failed", {"id": "2", "status": "FAILED"})
    send_event(runner, token, "system.error", {"message": "disk full"})
    assert wait_until(
        lambda: runner.api("GET", f"/api/webhooks/{bad['id']}/deliveries", token)[1][:1]
        and runner.api("GET", f"/api/webhooks/{bad['id']}/deliveries", token)[1][0]["status"] == "failed",
        timeout=15,
    )
    assert wait_until(lambda: len(runner.api("GET", f"/api/webhooks/{ok['id']}/deliveries", token)[1]) == 2)
    return token, ok, bad


def no_horizontal_overflow(page):
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_screenshots_layout_and_accessibility(runner, browser, ok_receiver, failing_receiver):
    """Every screen at 375 px and 1440 px: screenshots, no sideways scrolling, no serious or
    critical axe-core violation. (axe is injected, so this context bypasses the CSP.)"""
    token, ok, bad = populate(runner, ok_receiver, failing_receiver)
    (SCREENSHOTS / "axe.jsonl").unlink(missing_ok=True)
    serious = []
    for width, height in ((1440, 900), (375, 812)):
        context, page, errors = new_page(browser, width, height, bypass_csp=True)

        def shot(name, full_page=True):
            page.wait_for_timeout(150)
            page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=full_page)
            assert no_horizontal_overflow(page), f"{name} scrolls sideways at {width} px"
            serious.extend((name, width, v) for v in axe_check(page, f"{name}-{width}"))

        page.goto(runner.base + "/")
        expect(page.get_by_label("API token")).to_be_visible()
        shot("signin")
        sign_in(page, runner, token)
        expect(page.get_by_role("listitem").filter(has_text="/billing")).to_contain_text("failed")
        expect(page.get_by_role("listitem").filter(has_text="/orders")).to_contain_text("succeeded")
        shot("list")
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Events").click()
        first_event = page.get_by_role("list", name="Events").locator("summary").first
        first_event.click()
        expect(page.get_by_role("list", name="Events").locator("pre").first).to_be_visible()
        shot("events")
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Webhooks").click()
        page.get_by_role("button", name="New webhook").click()
        expect(page.get_by_role("dialog", name="New webhook")).to_be_visible()
        shot("new-webhook", full_page=False)
        page.keyboard.press("Escape")
        page.get_by_role("link", name=failing_receiver.url("/billing")).click()
        item = page.get_by_role("list", name="Deliveries").get_by_role("listitem").first
        item.locator("summary").click()
        expect(item.get_by_role("table")).to_be_visible()
        expect(page.get_by_role("region", name="Endpoint health")).to_contain_text("Failing")
        shot("detail-failed")
        page.get_by_role("button", name="Rotate secret").click()
        expect(page.get_by_role("dialog", name="Rotate secret")).to_be_visible()
        shot("rotate", full_page=False)
        page.keyboard.press("Escape")
        page.get_by_role("link", name="Webhooks", exact=True).last.click()
        page.get_by_role("link", name=ok_receiver.url("/orders")).click()
        expect(page.get_by_role("list", name="Deliveries").get_by_role("listitem")).to_have_count(2)
        page.get_by_role("list", name="Deliveries").locator("summary").first.click()
        shot("detail")
        # Nothing failed here, so a recovery queues nothing (and the screenshot shows its words).
        page.get_by_role("button", name="Recover").click()
        recover = page.get_by_role("dialog", name="Recover failed deliveries")
        recover.get_by_role("button", name="Recover").click()
        expect(recover.get_by_role("status")).to_contain_text("No failed delivery")
        shot("recover", full_page=False)
        recover.get_by_role("button", name="Close").first.click()
        page.get_by_role("button", name="Send test event").click()
        dialog = page.get_by_role("dialog", name="Send test event")
        dialog.get_by_role("button", name="Send test").click()
        expect(dialog.get_by_role("status")).to_contain_text("Webhook delivered successfully")
        shot("test-event", full_page=False)
        dialog.get_by_role("button", name="Close").first.click()
        page.get_by_role("button", name="Delete").click()
        expect(page.get_by_role("dialog", name="Delete this webhook?")).to_be_visible()
        shot("delete-confirm", full_page=False)
        page.get_by_role("button", name="Cancel").click()
        # The form's problems, then the secret shown once.
        page.get_by_role("link", name="Webhooks", exact=True).last.click()
        page.get_by_role("button", name="New webhook").click()
        form = page.get_by_role("dialog", name="New webhook")
        form.get_by_label("URL").fill("ftp://example.com/hook")
        form.get_by_role("button", name="Create webhook").click()
        expect(form.get_by_label("URL")).to_have_attribute("aria-invalid", "true")
        errors.allow_http(422)
        shot("new-webhook-errors", full_page=False)
        form.get_by_label("URL").fill(ok_receiver.url(f"/new-{width}"))
        form.get_by_role("checkbox", name="milestone.achieved", exact=True).check()
        form.get_by_role("button", name="Generate secret").click()
        form.get_by_role("button", name="Create webhook").click()
        expect(page.get_by_role("dialog", name="Save your signing secret")).to_be_visible()
        shot("secret-once", full_page=False)
        page.get_by_role("button", name="Done").click()
        expect(page.get_by_role("heading", name=ok_receiver.url(f"/new-{width}"), level=1)).to_be_focused()
        context.close()
        assert errors.unexpected() == []
    assert serious == [], json.dumps(serious, indent=1)


def test_the_page_weighs_under_100_kb(runner, browser, ok_receiver, failing_receiver):
    token, ok, bad = populate(runner, ok_receiver, failing_receiver)
    context, page, errors = new_page(browser)
    responses = []
    page.on("requestfinished", lambda r: responses.append(r))
    page.goto(f"{runner.base}/#token={token}")
    expect(page.get_by_role("listitem").filter(has_text="/billing")).to_contain_text("failed")
    page.get_by_role("link", name=ok_receiver.url("/orders")).click()
    expect(page.get_by_role("list", name="Deliveries").get_by_role("listitem")).to_have_count(2)
    page.wait_for_load_state("networkidle")
    sizes = {}
    for r in responses:
        s = r.sizes()
        sizes[r.url] = sizes.get(r.url, 0) + s["responseBodySize"] + s["responseHeadersSize"]
    static = sum(v for k, v in sizes.items() if "/api/" not in k)
    total = sum(sizes.values())
    (SCREENSHOTS / "weight.txt").write_text(f"static {static} bytes, with API calls {total} bytes\n")
    print(f"page weight: static {static / 1024:.1f} KB, with its API calls {total / 1024:.1f} KB")
    assert static < 100 * 1024
    assert total < 100 * 1024
    context.close()
    assert errors.unexpected() == []


# ------------------------------------------------------------------ rotation, resend, recover, health


def guide_signature_ok(secret: str, request: dict) -> bool:
    expected = hmac.new(secret.encode(), request["body"], hashlib.sha256).hexdigest()
    return hmac.compare_digest(request["headers"]["x-webhook-signature"], expected)


def standard_signature_ok(secret: str, request: dict) -> bool:
    """Standard Webhooks: one of the space-separated `v1,` signatures of `{id}.{ts}.{body}`,
    keyed with the decoded bytes of a `whsec_` secret (the bytes of any other)."""
    key = base64.b64decode(secret[len("whsec_"):]) if secret.startswith("whsec_") else secret.encode()
    h = request["headers"]
    signed = f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + request["body"]
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected, s) for s in h["webhook-signature"].split(" "))


def deliveries_of(runner, token, webhook_id):
    return runner.api("GET", f"/api/webhooks/{webhook_id}/deliveries", token)[1]


def all_failed(runner, token, webhook_id, count):
    ds = deliveries_of(runner, token, webhook_id)
    return len(ds) == count and all(d["status"] == "failed" for d in ds)


def test_rotate_secret_signs_with_the_new_and_during_the_overlap_the_old(runner, page_and_errors, ok_receiver):
    page, errors = page_and_errors
    errors.allow_http(422)
    token = runner.token()
    old = "old-secret-for-rotation-0123"
    url = ok_receiver.url("/rotate")
    webhook = create_webhook(runner, token, url, ["system.info"], secret=old)
    sign_in(page, runner, token)
    page.get_by_role("link", name=url).click()
    expect(page.get_by_role("heading", name=url, level=1)).to_be_visible()

    # Rotate with a one-hour overlap; the API generates the new secret, shown once.
    page.get_by_role("button", name="Rotate secret").click()
    dialog = page.get_by_role("dialog", name="Rotate secret")
    expect(dialog.get_by_label("New secret", exact=True)).to_be_focused()
    expect(dialog.get_by_label("Old secret keeps signing for")).to_have_value("86400")
    dialog.get_by_label("Old secret keeps signing for").select_option(label="1 hour")
    dialog.get_by_role("button", name="Rotate secret").click()
    shown = page.get_by_role("dialog", name="Save your signing secret")
    new = shown.get_by_label("Signing secret").input_value()
    assert new.startswith("whsec_") and new != old
    shown.get_by_role("button", name="Done").click()
    expect(shown).to_be_hidden()
    # The old secret's expiry, as the API states it (it never shows the secret itself).
    stored = runner.api("GET", f"/api/webhooks/{webhook['id']}", token)[1]
    assert len(stored["previousSecrets"]) == 1 and "secret" not in stored
    expires = stored["previousSecrets"][0]["expiresAt"]
    previous = page.locator("#previous-secrets time")
    expect(previous).to_have_attribute("datetime", expires)
    expect(page.get_by_text("Previous secret", exact=True)).to_be_visible()

    # A delivery after the rotation: the new secret verifies it, and (overlap) the old too.
    send_event(runner, token, "system.info", {"n": 1})
    assert wait_until(lambda: len(ok_receiver.to("/rotate")) == 1)
    got = ok_receiver.to("/rotate")[0]
    assert standard_signature_ok(new, got)
    assert standard_signature_ok(old, got)
    assert guide_signature_ok(old, got)  # the oldest valid secret signs X-Webhook-Signature
    assert not standard_signature_ok("whsec_" + base64.b64encode(b"x" * 32).decode(), got)

    # Rotate again with no overlap and a secret of our choosing: only it signs from then on.
    page.get_by_role("button", name="Rotate secret").click()
    dialog.get_by_label("New secret", exact=True).fill("too-short")
    dialog.get_by_label("Old secret keeps signing for").select_option(label="No overlap: revoke it now")
    dialog.get_by_role("button", name="Rotate secret").click()
    _, problem = runner.api(
        "POST", f"/api/webhooks/{webhook['id']}/rotate-secret", token, {"secret": "too-short", "overlapSeconds": 0}
    )
    message = {e["field"]: e["message"] for e in problem["errors"]}["secret"]
    expect(dialog.get_by_label("New secret", exact=True)).to_have_accessible_description(re.compile(re.escape(message)))
    expect(dialog.get_by_label("New secret", exact=True)).to_have_attribute("aria-invalid", "true")
    third = "third-secret-chosen-by-the-user-42"
    dialog.get_by_label("New secret", exact=True).fill(third)
    dialog.get_by_role("button", name="Rotate secret").click()
    expect(shown.get_by_label("Signing secret")).to_have_value(third)
    shown.get_by_role("button", name="Done").click()
    expect(page.locator("#previous-secrets")).to_have_count(0)
    send_event(runner, token, "system.info", {"n": 2})
    assert wait_until(lambda: len(ok_receiver.to("/rotate")) == 2)
    got = ok_receiver.to("/rotate")[1]
    assert standard_signature_ok(third, got) and guide_signature_ok(third, got)
    assert not standard_signature_ok(new, got) and not standard_signature_ok(old, got)


def test_a_refused_rotation_shows_the_apis_problem(runner, page_and_errors, ok_receiver):
    """Three replaced secrets still valid is the most a webhook keeps: the 409 is shown whole."""
    page, errors = page_and_errors
    errors.allow_http(409)
    token = runner.token()
    url = ok_receiver.url("/full")
    webhook = create_webhook(runner, token, url, ["system.info"])
    for _ in range(3):
        assert runner.api("POST", f"/api/webhooks/{webhook['id']}/rotate-secret", token, {})[0] == 200
    sign_in(page, runner, token)
    page.get_by_role("link", name=url).click()
    expect(page.get_by_text("Previous secrets", exact=True)).to_be_visible()
    expect(page.locator("#previous-secrets li")).to_have_count(3)
    page.get_by_role("button", name="Rotate secret").click()
    dialog = page.get_by_role("dialog", name="Rotate secret")
    dialog.get_by_role("button", name="Rotate secret").click()
    status, problem = runner.api("POST", f"/api/webhooks/{webhook['id']}/rotate-secret", token, {})
    assert status == 409
    alert = dialog.get_by_role("alert")
    expect(alert).to_contain_text(problem["title"])
    expect(alert).to_contain_text(problem["detail"])
    expect(page.get_by_role("dialog", name="Save your signing secret")).to_be_hidden()


def test_a_failed_delivery_is_resent_after_the_receiver_is_fixed(runner, page_and_errors):
    page, errors = page_and_errors
    errors.allow_http(409)
    receiver = Receiver(500, b"down for a deploy")
    try:
        token = runner.token()
        url = receiver.url("/resend")
        webhook = create_webhook(runner, token, url, ["system.error"])
        send_event(runner, token, "system.error", {"message": "disk full"})
        sign_in(page, runner, token)
        page.get_by_role("link", name=url).click()
        item = page.get_by_role("list", name="Deliveries").get_by_role("listitem").first
        expect(item).to_contain_text("failed", timeout=15000)
        expect(item).to_contain_text("3 attempts")
        receiver.status = 200
        item.locator("summary").click()
        item.get_by_role("button", name="Resend").click()
        expect(item).to_contain_text("succeeded", timeout=15000)
        expect(item).to_contain_text("4 attempts")
        rows = item.get_by_role("table").get_by_role("row")
        expect(rows).to_have_count(5)
        expect(rows.nth(4)).to_contain_text("200")
        page.screenshot(path=str(SCREENSHOTS / "resent-1440.png"), full_page=True)
        got = receiver.to("/resend")
        assert len(got) == 4
        # The same delivery, sent again: the same id and the same body.
        assert len({r["headers"]["webhook-id"] for r in got}) == 1
        assert len({r["body"] for r in got}) == 1
        (delivery,) = deliveries_of(runner, token, webhook["id"])
        assert delivery["status"] == "succeeded" and len(delivery["attempts"]) == 4

        # A refusal is shown as the API words it: inactive webhooks are not resent.
        runner.api("PUT", f"/api/webhooks/{webhook['id']}", token, {"active": False})
        page.reload()
        item = page.get_by_role("list", name="Deliveries").get_by_role("listitem").first
        item.locator("summary").click()
        button = item.get_by_role("button", name="Resend")
        button.click()
        _, problem = runner.api("POST", f"/api/webhooks/{webhook['id']}/deliveries/{delivery['id']}/resend", token)
        expect(button).to_have_accessible_description(f"{problem['title']}: {problem['detail']}")
        assert len(receiver.to("/resend")) == 4
    finally:
        receiver.close()


def local_input(page, epoch_s: float) -> str:
    """A `datetime-local` value for an instant, in the browser's own time zone."""
    return page.evaluate(
        """s => { const d = new Date(s * 1000), p = n => String(n).padStart(2, "0");
        return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`; }""",
        epoch_s,
    )


def test_recover_since_a_time_redelivers_the_failed_deliveries(runner, page_and_errors):
    page, errors = page_and_errors
    errors.allow_http(422)
    receiver = Receiver(500, b"down")
    try:
        token = runner.token()
        url = receiver.url("/recover")
        webhook = create_webhook(runner, token, url, ["system.error"])
        send_event(runner, token, "system.error", {"n": "before the window"})
        assert wait_until(lambda: all_failed(runner, token, webhook["id"], 1), timeout=15)
        time.sleep(1.1)  # the window starts a whole second after the first event
        since = time.time()
        send_event(runner, token, "system.error", {"n": 1})
        send_event(runner, token, "system.error", {"n": 2})
        assert wait_until(lambda: all_failed(runner, token, webhook["id"], 3), timeout=20)
        assert len(receiver.to("/recover")) == 9
        receiver.status = 200

        sign_in(page, runner, token)
        page.get_by_role("link", name=url).click()
        deliveries = page.get_by_role("list", name="Deliveries")
        expect(deliveries.get_by_role("listitem")).to_have_count(3)
        page.get_by_role("button", name="Recover").click()
        dialog = page.get_by_role("dialog", name="Recover failed deliveries")
        expect(dialog.get_by_label("Since")).to_be_focused()
        # "until" before "since": the API's problem, next to the field it names.
        dialog.get_by_label("Since").fill(local_input(page, since))
        dialog.get_by_label("Until").fill(local_input(page, since - 3600))
        dialog.get_by_role("button", name="Recover").click()
        expect(dialog.get_by_label("Until")).to_have_accessible_description(re.compile("must not be before since"))
        expect(dialog.get_by_label("Until")).to_have_attribute("aria-invalid", "true")
        assert len(receiver.to("/recover")) == 9
        dialog.get_by_label("Until").fill("")
        dialog.get_by_role("button", name="Recover").click()
        result = dialog.get_by_role("status")
        expect(result).to_contain_text("Queued 2 failed deliveries to be delivered again")
        expect(result).to_contain_text("That is the whole window.")
        dialog.get_by_role("button", name="Close").first.click()

        # The two in the window succeed; the one before it is left alone.
        expect(deliveries.get_by_text("succeeded")).to_have_count(2, timeout=15000)
        expect(deliveries.get_by_text("failed", exact=True)).to_have_count(1)
        assert wait_until(lambda: len(receiver.to("/recover")) == 11)
        by_status = sorted(d["status"] for d in deliveries_of(runner, token, webhook["id"]))
        assert by_status == ["failed", "succeeded", "succeeded"]
        bodies = [json.loads(r["body"])["payload"]["n"] for r in receiver.to("/recover")[9:]]
        assert sorted(bodies) == [1, 2]
    finally:
        receiver.close()


def test_health_of_a_failing_endpoint_is_shown(browser, failing_receiver):
    """A runner whose breaker opens after 2 failures (and stays open a minute): the list and
    the webhook's page show it, with the API's counts and last error."""
    runner = Runner(BREAKER_FAILURES="2", BREAKER_PROBE_SECONDS="60")
    # axe is injected, so this context bypasses the CSP.
    context, page, errors = new_page(browser, bypass_csp=True)
    try:
        token = runner.token()
        url = failing_receiver.url("/health")
        webhook = create_webhook(runner, token, url, ["system.error"])
        send_event(runner, token, "system.error", {"message": "disk full"})

        def health():
            return runner.api("GET", f"/api/webhooks/{webhook['id']}", token)[1]["health"]

        assert wait_until(lambda: health()["status"] == "open", timeout=15)
        h = health()
        assert h["consecutiveFailures"] == 2
        sign_in(page, runner, token)
        row = page.get_by_role("listitem").filter(has=page.get_by_role("link", name=url))
        expect(row).to_contain_text("Breaker open")
        expect(row).to_contain_text("2 consecutive failures")
        row.get_by_role("link", name=url).click()
        card = page.get_by_role("region", name="Endpoint health")
        expect(card).to_contain_text("Breaker open")
        expect(card).to_contain_text("2 consecutive failures")
        expect(card).to_contain_text("Deliveries are paused until the next probe")
        expect(card.locator("dd").filter(has_text=h["lastError"])).to_have_count(1)
        expect(card.locator("dd time[datetime='%s']" % h["nextProbeAt"])).to_have_count(1)
        stats = runner.api("GET", f"/api/webhooks/{webhook['id']}/stats", token)[1]
        assert stats["byStatus"]["pending"] == 1 and stats["failedAttempts"] == 2
        pending = card.locator(".stat").filter(has=page.locator("dt", has_text="Pending")).locator("dd")
        expect(pending).to_have_text("1")
        expect(card).to_contain_text("2 attempts, 2 failed.")
        # The delivery waits for the breaker: pending.
        item = page.get_by_role("list", name="Deliveries").get_by_role("listitem").first
        expect(item).to_contain_text("pending")
        page.screenshot(path=str(SCREENSHOTS / "health-open-1440.png"), full_page=True)
        assert axe_check(page, "health-open-1440") == []
        context.close()
        assert errors.unexpected() == []
    finally:
        runner.close()


def test_an_auto_disabled_webhook_shows_its_reason_and_can_be_enabled(browser, failing_receiver):
    runner = Runner(AUTO_DISABLE_AFTER_SECONDS="1")
    context, page, errors = new_page(browser, 375, 812, bypass_csp=True)
    try:
        token = runner.token()
        url = failing_receiver.url("/disabled")
        webhook = create_webhook(runner, token, url, ["system.error"])
        send_event(runner, token, "system.error", {"message": "disk full"})

        def stored():
            return runner.api("GET", f"/api/webhooks/{webhook['id']}", token)[1]

        assert wait_until(lambda: stored()["active"] is False, timeout=15)
        reason = stored()["disabledReason"]
        assert reason
        sign_in(page, runner, token)
        row = page.get_by_role("listitem").filter(has=page.get_by_role("link", name=url))
        expect(row).to_contain_text("Disabled")
        expect(row).to_contain_text("Disabled automatically")
        expect(row).to_contain_text(reason)
        row.get_by_role("link", name=url).click()
        notice = page.locator("#detail-disabled")
        expect(notice).to_contain_text(reason)
        page.screenshot(path=str(SCREENSHOTS / "disabled-375.png"), full_page=True)
        assert no_horizontal_overflow(page)
        assert axe_check(page, "disabled-375") == []
        page.get_by_role("button", name="Enable").click()
        expect(notice).to_be_hidden()
        expect(page.locator("#detail-badge")).to_have_text("Active")
        after = stored()
        assert after["active"] is True and "disabledReason" not in after
        assert after["health"]["status"] == "healthy"
        context.close()
        assert errors.unexpected() == []
    finally:
        runner.close()

"""The dashboard page (docs/dashboard.md) in headless Chromium against a real relay."""

import time

from playwright.sync_api import expect
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from conftest import screenshot, sign_in

XSS = "<img src=x onerror=alert(1)>"


def signed_in_operator(open_page, relay, **size):
    watched = open_page(**size)
    sign_in(watched, relay, relay.operator)
    expect(watched.page.locator("#who")).to_have_text("operator (sending as user)")
    # The stream is open once the page says so: what commits from now on reaches it.
    expect(watched.page.locator("#live")).to_have_text("live")
    return watched


def test_the_page_is_served_with_a_strict_policy(relay):
    for path, ctype in [("/", "text/html"), ("/dashboard/app.js", "text/javascript"), ("/dashboard/style.css", "text/css")]:
        import urllib.request

        with urllib.request.urlopen(relay.url + path) as response:
            assert response.headers["content-type"].startswith(ctype), path
            policy = response.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy, policy
            assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["etag"]


def test_sign_in_with_the_operator_token(open_page, relay):
    watched = signed_in_operator(open_page, relay)
    expect(watched.page.locator("#agents")).to_be_visible()
    expect(watched.page.locator("#health-list")).to_contain_text("database")
    assert watched.errors == [], watched.errors


def test_a_wrong_token_shows_a_clear_sign_in_error(open_page, relay):
    watched = open_page()
    sign_in(watched, relay, "not-a-token-anyone-holds")
    expect(watched.page.locator("#sign-in-error")).to_contain_text("does not know this token")
    expect(watched.page.locator("#app")).to_be_hidden()
    screenshot(watched.page, "sign-in-error-1280")


def test_the_agents_view_lists_agents_registered_through_the_api(open_page, relay):
    relay.register({"id": "alice", "label": "backend", "tags": ["rust"]})
    relay.register({"id": "bob"})
    watched = signed_in_operator(open_page, relay)
    rows = watched.page.locator("#agents-table tbody tr")
    expect(rows.filter(has_text="alice")).to_contain_text("online")
    expect(rows.filter(has_text="alice")).to_contain_text("label:backend")
    expect(rows.filter(has_text="bob")).to_contain_text("ago")
    # Registered while the page is open: the change event reloads the view.
    relay.register({"id": "carol"})
    expect(rows.filter(has_text="carol")).to_have_count(1)


def test_an_empty_relay_says_what_to_do(open_page, relay):
    watched = signed_in_operator(open_page, relay)
    expect(watched.page.locator("#agents-table")).to_contain_text("register one with agent-relay agent add ID")
    expect(watched.page.locator("#feed-list")).to_contain_text("No messages yet")


def test_a_message_sent_through_the_api_appears_in_the_feed_within_a_second(open_page, relay):
    relay.register({"id": "alice"})
    watched = signed_in_operator(open_page, relay)
    started = time.monotonic()
    sent = relay.send({"from": "user", "to": "alice", "body": "hello from the API"})
    expect(watched.page.locator(f'#feed-list li[data-id="{sent["id"]}"]')).to_contain_text("hello from the API", timeout=1000)
    assert time.monotonic() - started < 1.0
    assert watched.page.evaluate("performance.getEntriesByType('navigation').length") == 1, "no reload"


def test_sending_from_the_page_reaches_the_agents_inbox(open_page, relay):
    alice = relay.register({"id": "alice"})
    watched = signed_in_operator(open_page, relay)
    page = watched.page
    page.fill("#send-to", "alice")
    page.fill("#send-body", "sent from the page")
    page.click("#send-form button[type=submit]")
    expect(page.locator("#send-status")).to_contain_text("sent #")
    _, inbox = relay.call("GET", "/v1/agents/alice/inbox", token=alice, expect=200)
    assert [(m["from"], m["body"]) for m in inbox] == [("user", "sent from the page")]


def test_a_claimed_job_shows_its_holder_and_lease_and_moves_to_completed(open_page, relay):
    alice = relay.register({"id": "alice"})
    job = relay.send({"from": "user", "to": "alice", "body": "build it", "claimable": True})
    watched = signed_in_operator(open_page, relay)
    page = watched.page
    expect(page.locator(f'#jobs-open li[data-id="{job["id"]}"]')).to_be_visible()
    relay.call("POST", f"/v1/messages/{job['id']}/claim", {"agentId": "alice"}, token=alice, expect=200)
    claimed = page.locator(f'#jobs-claimed li[data-id="{job["id"]}"]')
    expect(claimed).to_contain_text("held by alice")
    expect(claimed).to_contain_text("lease ends in 4 min")
    relay.call("POST", f"/v1/messages/{job['id']}/complete", {"agentId": "alice", "result": {"ok": True}}, token=alice, expect=200)
    expect(page.locator(f'#jobs-completed li[data-id="{job["id"]}"]')).to_contain_text("by alice")
    expect(page.locator(f'#jobs-claimed li[data-id="{job["id"]}"]')).to_have_count(0)


def test_a_scheduled_job_shows_when_it_is_due_and_turns_open_at_its_time(open_page, relay):
    relay.register({"id": "alice"})
    job = relay.send({"from": "user", "to": "alice", "body": "at its time", "claimable": True,
                      "delayMs": 3000})
    watched = signed_in_operator(open_page, relay)
    page = watched.page
    scheduled = page.locator(f'#jobs-scheduled li[data-id="{job["id"]}"]')
    expect(scheduled).to_contain_text("due in ")
    expect(page.locator(f'#jobs-open li[data-id="{job["id"]}"]')).to_have_count(0)
    page.locator("#jobs").scroll_into_view_if_needed()
    screenshot(page, "jobs-scheduled-1280", full_page=False)
    # Its time comes with no write: the page looks again by itself.
    expect(page.locator(f'#jobs-open li[data-id="{job["id"]}"]')).to_be_visible(timeout=8000)
    expect(scheduled).to_have_count(0)


def test_a_job_waiting_for_another_shows_what_it_waits_for_and_cancel_dead_letters_it(open_page, relay):
    relay.register({"id": "alice"})
    first = relay.send({"from": "user", "to": "alice", "body": "build it", "claimable": True})
    second = relay.send({"from": "user", "to": "alice", "body": "ship it", "claimable": True,
                         "after": [first["id"]]})
    watched = signed_in_operator(open_page, relay)
    page = watched.page
    expect(page.locator(f'#jobs-blocked li[data-id="{second["id"]}"]')).to_contain_text(f'waits for #{first["id"]}')
    page.locator(f'#jobs-open li[data-id="{first["id"]}"] button.cancel').click()
    page.locator("#cancel-form button[type=submit]").click()
    expect(page.locator(f'#jobs-cancelled li[data-id="{first["id"]}"]')).to_contain_text("by operator")
    expect(page.locator(f'#jobs-dead li[data-id="{second["id"]}"]')).to_be_visible()
    _, cancelled = relay.call("GET", f"/v1/messages/{first['id']}", expect=200)
    assert cancelled["cancelReason"] == "cancelled on the dashboard"


def test_a_job_cancelled_from_the_page_with_a_reason_is_never_offered_to_claim_next(open_page, relay):
    alice = relay.register({"id": "alice"})
    job = relay.send({"from": "user", "to": "alice", "body": "not needed after all", "claimable": True})
    watched = signed_in_operator(open_page, relay)
    page = watched.page
    page.locator(f'#jobs-open li[data-id="{job["id"]}"] button.cancel').click()
    expect(page.locator("#cancel-form")).to_be_visible()
    expect(page.locator("#cancel-id")).to_have_text(f'#{job["id"]}')
    page.fill("#cancel-reason", "superseded by #99")
    page.locator("#cancel-form button[type=submit]").click()
    expect(page.locator(f'#jobs-cancelled li[data-id="{job["id"]}"]')).to_contain_text("superseded by #99")
    expect(page.locator("#cancel-form")).to_be_hidden()
    expect(page.locator(f'#jobs-open li[data-id="{job["id"]}"]')).to_have_count(0)
    _, cancelled = relay.call("GET", f"/v1/messages/{job['id']}", expect=200)
    assert cancelled["cancelReason"] == "superseded by #99"
    status, _ = relay.call("POST", "/v1/agents/alice/claim-next", {}, token=alice)
    assert status == 204, "a cancelled job was offered"
    assert watched.errors == [], watched.errors


def test_a_cancel_the_relay_refuses_shows_its_reason(open_page, relay):
    alice = relay.register({"id": "alice"})
    job = relay.send({"from": "user", "to": "alice", "body": "finished meanwhile", "claimable": True})
    watched = signed_in_operator(open_page, relay)
    page = watched.page
    page.locator(f'#jobs-open li[data-id="{job["id"]}"] button.cancel').click()
    expect(page.locator("#cancel-form")).to_be_visible()
    # Completed by its holder while the human types the reason: the relay refuses (409).
    relay.call("POST", f"/v1/messages/{job['id']}/claim", {"agentId": "alice"}, token=alice, expect=200)
    relay.call("POST", f"/v1/messages/{job['id']}/complete", {"agentId": "alice"}, token=alice, expect=200)
    page.locator("#cancel-form button[type=submit]").click()
    expect(page.locator("#cancel-error")).to_contain_text(f'The relay refused to cancel #{job["id"]}')
    expect(page.locator(f'#jobs-completed li[data-id="{job["id"]}"]')).to_be_visible()
    page.locator("#cancel-keep").click()
    expect(page.locator("#cancel-form")).to_be_hidden()
    expect(page.locator("#cancel-error")).to_have_text("")


def test_an_approval_answered_allow_on_the_page_completes_with_that_verdict(open_page, relay):
    alice = relay.register({"id": "alice"})
    watched = signed_in_operator(open_page, relay)
    page = watched.page
    expect(page.locator("#waiting")).to_be_hidden()
    approval = relay.send(
        {"from": "alice", "to": "user", "kind": "approval", "claimable": True,
         "subject": "Approve Bash for alice? (abcde)", "body": "alice asks to use Bash: ls"},
        token=alice,
    )
    item = page.locator(f'#waiting-list li[data-id="{approval["id"]}"]')
    expect(item).to_contain_text("Approve Bash for alice?")
    item.get_by_role("button", name="Allow").click()
    expect(page.locator("#waiting")).to_be_hidden()
    _, stored = relay.call("GET", f"/v1/messages/{approval['id']}", expect=200)
    assert stored["completedBy"] == "user" and stored["result"] == {"verdict": "allow"}, stored


def test_a_question_to_user_is_answered_with_a_reply(open_page, relay):
    alice = relay.register({"id": "alice"})
    question = relay.send({"from": "alice", "to": "user", "body": "which branch?"}, token=alice)
    watched = signed_in_operator(open_page, relay)
    item = watched.page.locator(f'#waiting-list li[data-id="{question["id"]}"]')
    item.get_by_label(f"Reply to #{question['id']}").fill("main")
    item.get_by_role("button", name="Reply").click()
    expect(watched.page.locator("#waiting")).to_be_hidden()
    _, inbox = relay.call("GET", "/v1/agents/alice/inbox", token=alice, expect=200)
    assert [(m["body"], m.get("replyTo")) for m in inbox] == [("main", question["id"])]


def test_channels_show_their_bindings_and_the_route_a_conversation_resolves_to(open_page, relay):
    relay.register({"id": "alice"})
    relay.register({"id": "telegram:bot1", "tags": ["channel:telegram"], "meta": {"kind": "channel", "target": "label:backend"}})
    relay.call("PUT", "/v1/channels/telegram:bot1/bindings",
               {"conversationId": "c1", "target": {"type": "agent", "id": "alice"}, "mode": "exclusive"}, expect=200)
    watched = signed_in_operator(open_page, relay)
    channel = watched.page.locator("#channels-list > li").filter(has_text="telegram:bot1")
    expect(channel).to_contain_text("default → label:backend")
    expect(channel).to_contain_text("conversation c1 → alice")
    channel.get_by_label("Conversation on telegram:bot1").fill("c1")
    channel.get_by_role("button", name="Route").click()
    expect(channel).to_contain_text("resolves by its conversation bindings")
    channel.get_by_label("Conversation on telegram:bot1").fill("other")
    channel.get_by_role("button", name="Route").click()
    expect(channel).to_contain_text("resolves by its default bindings")


def test_an_xss_body_renders_as_text_and_no_dialog_opens(open_page, relay):
    relay.register({"id": "alice", "label": XSS})
    watched = signed_in_operator(open_page, relay)
    sent = relay.send({"from": "user", "to": "alice", "subject": XSS, "body": XSS})
    item = watched.page.locator(f'#feed-list li[data-id="{sent["id"]}"]')
    expect(item.locator(".body")).to_have_text(XSS)
    expect(item.locator(".subject")).to_have_text(XSS)
    expect(watched.page.locator("#agents-table")).to_contain_text("label:" + XSS)
    assert watched.page.locator("img").count() == 0
    assert watched.dialogs == []
    assert watched.errors == [], watched.errors


def test_an_agent_token_sees_only_its_own_inbox_and_no_operator_data(open_page, relay):
    alice = relay.register({"id": "alice"})
    relay.register({"id": "bob"})
    relay.send({"from": "user", "to": "alice", "body": "for alice"})
    relay.send({"from": "user", "to": "bob", "body": "secret for bob"})
    job = relay.send({"from": "user", "to": "alice", "body": "alice's job", "claimable": True})
    relay.call("POST", f"/v1/messages/{job['id']}/claim", {"agentId": "alice"}, token=alice, expect=200)
    watched = open_page()
    page = watched.page
    seen = []
    page.on("response", lambda response: seen.append(response))
    sign_in(watched, relay, alice)
    expect(page.locator("#who")).to_have_text("agent alice")
    expect(page.locator("#inbox-list")).to_contain_text("for alice")
    expect(page.locator("#claims-list")).to_contain_text("alice's job")
    for section in ["#agents", "#feed", "#jobs", "#tasks", "#channels", "#orchestrators", "#activity", "#health"]:
        expect(page.locator(section)).to_be_hidden()
    # A message arriving while the page is open shows without a reload.
    relay.send({"from": "user", "to": "alice", "body": "later for alice"})
    expect(page.locator("#inbox-list")).to_contain_text("later for alice")
    page.fill("#send-to", "bob")
    page.fill("#send-body", "hi bob, from alice")
    page.click("#send-form button[type=submit]")
    expect(page.locator("#send-status")).to_contain_text("sent #")
    api = [r for r in seen if "/v1/" in r.url or "/metrics" in r.url]
    assert api, "the page made requests"
    for response in api:
        path = response.url.split(relay.url, 1)[1]
        assert response.status < 400, (path, response.status)
        assert path == "/v1/whoami" or path.startswith("/v1/agents/alice/inbox") or path.startswith(
            "/v1/messages?state=claimed&holder=alice") or path == "/v1/messages", path
        if response.request.method == "GET":
            assert "secret for bob" not in response.text(), path
    screenshot(page, "agent-view-1280")


def populate(relay):
    tokens = {}
    for card in [
        {"id": "alice", "label": "backend", "tags": ["rust", "claude"]},
        {"id": "bob", "label": "frontend", "tags": ["codex"]},
        {"id": "carol-with-a-rather-long-agent-identifier-that-wraps", "label": "ops"},
    ]:
        tokens[card["id"]] = relay.register(card)
    relay.send({"from": "user", "to": "label:backend", "subject": "Fix the flaky test", "body": "tests/all/push.rs fails one time in ten", "claimable": True})
    job = relay.send({"from": "user", "to": "bob", "body": "Review the dashboard CSS " + "x" * 120, "claimable": True})
    relay.call("POST", f"/v1/messages/{job['id']}/claim", {"agentId": "bob"}, token=tokens["bob"], expect=200)
    relay.send({"from": "alice", "to": "user", "kind": "approval", "claimable": True,
                "subject": "Approve Bash for alice? (qwert)", "body": "alice asks to use Bash: cargo test"}, token=tokens["alice"])
    relay.send({"from": "bob", "to": "user", "body": "Should the feed show 50 or 100 messages?"}, token=tokens["bob"])
    relay.send({"from": "user", "to": "broadcast", "body": "Standup in 5 minutes"})
    return tokens


def test_the_phone_width_layout_has_no_horizontal_scroll(open_page, relay):
    populate(relay)
    watched = signed_in_operator(open_page, relay, width=390, height=844)
    page = watched.page
    expect(page.locator("#waiting-list")).to_contain_text("Approve Bash")
    expect(page.locator("#agents-table")).to_contain_text("carol")
    width = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert width[0] <= width[1], f"scrollWidth {width[0]} > clientWidth {width[1]}"
    screenshot(page, "operator-390")


def test_screenshots_of_the_main_views(open_page, relay):
    populate(relay)
    for scheme in ["light", "dark"]:
        watched = signed_in_operator(open_page, relay, color_scheme=scheme)
        expect(watched.page.locator("#waiting-list")).to_contain_text("Approve Bash")
        expect(watched.page.locator("#jobs-claimed")).to_contain_text("held by bob")
        screenshot(watched.page, f"operator-1280-{scheme}")
        screenshot(watched.page, f"operator-1280-{scheme}-top", full_page=False)
        assert watched.errors == [], watched.errors
    phone = signed_in_operator(open_page, relay, width=390, height=844, color_scheme="dark")
    expect(phone.page.locator("#jobs-claimed")).to_contain_text("held by bob")
    screenshot(phone.page, "operator-390-dark")


def metric_total(relay, name, **labels):
    """The sum of a metric's samples whose labels include `labels`, read with a Prometheus parser."""
    status, text = relay.call("GET", "/metrics")
    assert status == 200, text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_metrics_parse_and_the_counters_move_after_a_send(relay):
    relay.register({"id": "alice"})
    sends = {"route": "/v1/messages", "method": "POST", "status": "201"}
    before = metric_total(relay, "relay_http_requests_total", **sends)
    relay.send({"from": "user", "to": "alice", "body": "count me"})
    relay.send({"from": "user", "to": "alice", "body": "and me"})
    assert metric_total(relay, "relay_http_requests_total", **sends) == before + 2
    assert metric_total(relay, "relay_http_request_duration_seconds_count") >= 3


def until_metric(relay, name, value, **labels):
    """Scrapes until a gauge reads `value` (the relay is asked for its counts at most once a second)."""
    deadline = time.monotonic() + 5
    while (seen := metric_total(relay, name, **labels)) != value:
        assert time.monotonic() < deadline, (name, labels, seen, value)
        time.sleep(0.1)


def test_metrics_gauges_follow_a_send_a_claim_and_a_completion(relay):
    alice = relay.register({"id": "alice"})
    _, stats = relay.call("GET", "/v1/stats", expect=200)
    until_metric(relay, "relay_agents", stats["agents"]["online"], status="online")
    for state in ["open", "claimed", "completed", "dead"]:
        until_metric(relay, "relay_jobs", 0, state=state)
    until_metric(relay, "relay_messages", 0, state="unread")

    chat = relay.send({"from": "user", "to": "alice", "body": "read me"})
    until_metric(relay, "relay_messages", 1, state="unread")
    relay.call("POST", f"/v1/messages/{chat['id']}/read", {"agentId": "alice"}, token=alice, expect=200)
    until_metric(relay, "relay_messages", 1, state="read")
    until_metric(relay, "relay_messages", 0, state="unread")

    job = relay.send({"from": "user", "to": "alice", "body": "do it", "claimable": True})
    until_metric(relay, "relay_jobs", 1, state="open")
    relay.call("POST", f"/v1/messages/{job['id']}/claim", {"agentId": "alice"}, token=alice, expect=200)
    until_metric(relay, "relay_jobs", 1, state="claimed")
    until_metric(relay, "relay_jobs", 0, state="open")
    relay.call("POST", f"/v1/messages/{job['id']}/complete", {"agentId": "alice"}, token=alice, expect=200)
    until_metric(relay, "relay_jobs", 1, state="completed")
    until_metric(relay, "relay_jobs", 0, state="claimed")


def test_metrics_listen_serves_the_metrics_without_a_token_on_its_own_address(tmp_path):
    import re
    import urllib.error
    import urllib.request

    from conftest import Relay

    relay = Relay(tmp_path, extra=["--metrics-listen", "127.0.0.1:0"])
    try:
        relay.register({"id": "alice"})
        relay.send({"from": "user", "to": "alice", "body": "count me"})
        address = None
        for _ in range(100):
            found = re.search(r"metrics=(\S+)", relay.log_path.read_text())
            if found:
                address = found.group(1)
                break
            time.sleep(0.05)
        assert address and address != relay.url.split("//")[1], address
        with urllib.request.urlopen(f"http://{address}/metrics") as response:
            text = response.read().decode()
        sends = [s for f in text_string_to_metric_families(text) for s in f.samples
                 if s.name == "relay_http_requests_total" and s.labels.get("route") == "/v1/messages"]
        assert [s.value for s in sends] == [1.0], sends
        # The main address still wants the operator token, and the open one serves nothing else.
        for url, code in [(relay.url + "/metrics", 401), (f"http://{address}/v1/agents", 404)]:
            try:
                urllib.request.urlopen(url)
                raise AssertionError(f"{url} answered without a token")
            except urllib.error.HTTPError as error:
                assert error.code == code, (url, error.code)
    finally:
        relay.stop()

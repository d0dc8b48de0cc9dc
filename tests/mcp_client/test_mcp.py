"""The relay's MCP server driven by the official Python SDK (PyPI `mcp`), nobody here wrote it.

Starts the real binary on loopback with a fresh database, then runs every case in each way a
client reaches the tools: streamable HTTP in the handshake era (`mode="legacy"`), streamable HTTP
in the stateless 2026-07-28 era (`mode="auto"`), and stdio through `agent-relay mcp --url`.

Usage: python test_mcp.py PATH/TO/agent-relay
The last line is `mcp client tests: N passed, M failed`; the exit status is 1 when any failed.
"""

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
import warnings

import httpx2
import jsonschema
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

OPERATOR = "mcp-test-operator-token-of-the-python-checks"
TOOLS = {
    "whoami", "list_agents", "send_message", "fetch_inbox", "mark_read", "get_thread",
    "claim_next", "claim_next_batch", "claim_message", "renew_claim", "release_claim", "complete_claim", "cancel_job",
    "heartbeat",
    "set_status", "list_tasks", "set_task_status", "reserve_paths", "release_paths",
    "list_reservations", "search_messages", "check_paths",
}
READ_ONLY = {
    "whoami", "list_agents", "fetch_inbox", "get_thread", "list_tasks", "list_reservations",
    "search_messages", "check_paths",
}


class Relay:
    """The real server, on a fresh database in a temporary directory."""

    def __init__(self, binary, log="info"):
        self.binary = binary
        self.dir = tempfile.TemporaryDirectory()
        env = dict(os.environ, RELAY_OPERATOR_TOKEN=OPERATOR, RELAY_LOG=log)
        self.process = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--db", os.path.join(self.dir.name, "relay.db")],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for line in self.process.stderr:
            if "listen=" in line:
                self.base = "http://" + line.split("listen=")[1].split()[0]
                break
        else:
            raise RuntimeError("agent-relay serve exited before listening")
        # Keep draining the log (into `log`) so the server never blocks on a full pipe.
        self.log = []
        threading.Thread(target=lambda: [self.log.append(line) for line in self.process.stderr], daemon=True).start()
        self.tokens = {"user": OPERATOR}
        for agent in ("alice", "bob", "carol"):
            self.tokens[agent] = self.rest("POST", "/v1/agents", OPERATOR, {"id": agent})[1]["token"]

    def rest(self, method, path, token, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)
        self.dir.cleanup()


def connect(relay, transport, agent):
    """A client acting as `agent` (its token) over `transport`: legacy, auto or stdio."""
    token = relay.tokens[agent]
    if transport == "stdio":
        params = StdioServerParameters(
            command=relay.binary,
            args=["mcp", "--url", relay.base],
            env={"RELAY_TOKEN": token, "RELAY_LOG": "warn"},
        )
        return Client(params, mode="legacy")
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=90)
    return Client(streamable_http_client(relay.base + "/mcp", http_client=http), mode=transport)


def ok(result):
    assert not result.is_error, f"the tool failed: {result.content}"
    return result.structured_content


def error_text(result):
    assert result.is_error, f"expected a tool error, got {result.structured_content}"
    return " ".join(block.text for block in result.content)


async def lists_every_tool_with_object_input_schemas(relay, transport):
    async with connect(relay, transport, "alice") as client:
        if transport == "auto":
            assert client.protocol_version == "2026-07-28", client.protocol_version
        listed = (await client.list_tools()).tools
        names = {tool.name for tool in listed}
        assert names == TOOLS, f"missing: {TOOLS - names}, unexpected: {names - TOOLS}"
        for tool in listed:
            for schema in (tool.input_schema, tool.output_schema):
                jsonschema.Draft202012Validator.check_schema(schema)
                assert schema["type"] == "object", f"{tool.name}: {schema}"
            caller_filled = {"from", "agentId"} & set(tool.input_schema.get("properties", {}))
            assert not caller_filled, f"{tool.name} takes {caller_filled}: they come from the token"
            read_only = bool(tool.annotations and tool.annotations.read_only_hint)
            assert read_only == (tool.name in READ_ONLY), f"{tool.name} readOnlyHint is {read_only}"


async def whoami_is_the_token_owner(relay, transport):
    async with connect(relay, transport, "alice") as client:
        card = ok(await client.call_tool("whoami", {}))
        assert card["id"] == "alice", card
        assert "`alice`" in (client.instructions or ""), client.instructions


async def a_message_sent_as_alice_reaches_bob(relay, transport):
    async with connect(relay, transport, "alice") as alice, connect(relay, transport, "bob") as bob:
        sent = ok(await alice.call_tool("send_message", {"to": "bob", "body": f"hello over {transport}"}))
        assert sent["message"]["from"] == "alice", sent
        inbox = ok(await bob.call_tool("fetch_inbox", {"since": sent["message"]["id"] - 1}))["items"]
        assert [m["body"] for m in inbox] == [f"hello over {transport}"], inbox
        assert inbox[0]["from"] == "alice"


async def alice_cannot_read_bobs_inbox(relay, transport):
    relay.rest("POST", "/v1/messages", OPERATOR, {"from": "user", "to": "bob", "body": "for bob only"})
    async with connect(relay, transport, "alice") as alice:
        refused = error_text(await alice.call_tool("fetch_inbox", {"agentId": "bob"}))
        assert "agentId" in refused and "token" in refused, refused
        own = ok(await alice.call_tool("fetch_inbox", {}))["items"]
        assert all(m["body"] != "for bob only" for m in own), own


async def the_second_claimer_gets_a_conflict(relay, transport):
    status, job = relay.rest(
        "POST", "/v1/messages", OPERATOR,
        {"from": "user", "to": "broadcast", "body": "one job", "claimable": True},
    )
    assert status == 201, job
    job_id = job["message"]["id"]
    async with connect(relay, transport, "bob") as bob, connect(relay, transport, "carol") as carol:
        results = await asyncio.gather(
            bob.call_tool("claim_message", {"messageId": job_id}),
            carol.call_tool("claim_message", {"messageId": job_id}),
        )
        won = [r for r in results if not r.is_error]
        lost = [r for r in results if r.is_error]
        assert len(won) == 1 and len(lost) == 1, results
        assert "conflict" in error_text(lost[0]), error_text(lost[0])
        holder = won[0].structured_content["claimedBy"]
        assert holder in ("bob", "carol"), won[0].structured_content
        winner = bob if holder == "bob" else carol
        ok(await winner.call_tool("release_claim", {"messageId": job_id}))


async def claim_next_waits_for_a_job_and_complete_claim_finishes_it(relay, transport):
    kind = f"build-{transport}"
    async with connect(relay, transport, "carol") as carol:
        waiting = asyncio.create_task(carol.call_tool("claim_next", {"kind": kind, "waitSeconds": 20}))
        await asyncio.sleep(0.3)
        assert not waiting.done(), "claim_next answered before there was a job"
        status, job = relay.rest(
            "POST", "/v1/messages", OPERATOR,
            # A job of its own kind (a group target keeps a custom kind claimable), so no job of
            # another case is taken instead.
            {"from": "user", "to": "broadcast", "kind": kind, "body": "build it", "claimable": True},
        )
        assert status == 201, job
        taken = ok(await waiting)["result"]
        assert taken["id"] == job["message"]["id"] and taken["claimedBy"] == "carol", taken
        done = ok(await carol.call_tool("complete_claim", {"messageId": taken["id"], "result": {"artifact": "a.tgz"}}))
        assert done["completedBy"] == "carol" and done["result"] == {"artifact": "a.tgz"}, done
        assert ok(await carol.call_tool("claim_next", {"kind": kind}))["result"] is None
        # Several at once, each under its own lease.
        sent = []
        for n in range(3):
            status, job = relay.rest(
                "POST", "/v1/messages", OPERATOR,
                {"from": "user", "to": "broadcast", "kind": kind, "body": f"part {n}", "claimable": True},
            )
            assert status == 201, job
            sent.append(job["message"]["id"])
        batch = ok(await carol.call_tool("claim_next_batch", {"kind": kind, "max": 2}))["items"]
        assert [m["id"] for m in batch] == sent[:2], batch
        assert all(m["claimedBy"] == "carol" for m in batch), batch
        rest = ok(await carol.call_tool("claim_next_batch", {"kind": kind, "max": 100}))["items"]
        assert [m["id"] for m in rest] == sent[2:], rest
        for job_id in sent:
            ok(await carol.call_tool("complete_claim", {"messageId": job_id}))


async def a_waiting_fetch_wakes_within_500ms_of_a_send(relay, transport):
    async with connect(relay, transport, "bob") as bob:
        latest = ok(await bob.call_tool("fetch_inbox", {}))["items"]
        since = max([m["id"] for m in latest], default=0)
        waiting = asyncio.create_task(bob.call_tool("fetch_inbox", {"since": since, "waitSeconds": 20}))
        await asyncio.sleep(0.5)
        assert not waiting.done(), "the fetch answered before anything was sent"
        relay.rest("POST", "/v1/messages", OPERATOR, {"from": "user", "to": "bob", "body": "wake up"})
        sent_at = time.monotonic()
        inbox = ok(await waiting)["items"]
        woke_after = time.monotonic() - sent_at
        assert [m["body"] for m in inbox] == ["wake up"], inbox
        assert woke_after < 0.5, f"woke {woke_after:.3f} s after the send"


async def the_operator_token_acts_as_user(relay, transport):
    async with connect(relay, transport, "user") as operator:
        assert ok(await operator.call_tool("whoami", {}))["id"] == "user"
        sent = ok(await operator.call_tool("send_message", {"to": "alice", "body": "from the human"}))
        assert sent["message"]["from"] == "user", sent


async def no_or_a_wrong_token_gets_401(relay, transport):
    initialize = {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "probe", "version": "0"}},
    }
    headers = {"Accept": "application/json, text/event-stream"}
    async with httpx2.AsyncClient() as http:
        for auth in ({}, {"Authorization": "Bearer relay_not-a-token"}):
            response = await http.post(relay.base + "/mcp", json=initialize, headers=headers | auth)
            assert response.status_code == 401, (auth, response.status_code, response.text)
    if transport == "stdio":
        relay.tokens["nobody"] = "relay_not-a-token"
        try:
            async with connect(relay, transport, "nobody"):
                raise AssertionError("the stdio server connected with a wrong token")
        except AssertionError:
            raise
        except Exception:
            pass


async def a_subscribed_inbox_resource_is_told_of_a_send_and_not_after_unsubscribe(relay):
    """Over stdio: the inbox resource listed and read, subscribed, told of a send by another
    agent within 500 ms, and nothing told once unsubscribed (docs/channels.md, "Resources")."""
    updates = []

    async def record(message):
        if getattr(message, "method", None) == "notifications/resources/updated":
            updates.append((message.params.uri, time.perf_counter()))

    params = StdioServerParameters(
        command=relay.binary,
        args=["mcp", "--url", relay.base],
        env={"RELAY_TOKEN": relay.tokens["carol"], "RELAY_LOG": "warn"},
    )
    inbox = "relay://agents/carol/inbox"
    # The handshake era's resources/subscribe, which this SDK flags as gone from 2026-07-28 on.
    warnings.filterwarnings("ignore", message="resources/(un)?subscribe is removed")
    async with Client(params, mode="legacy", message_handler=record) as client:
        listed = await client.list_resources()
        assert [str(r.uri) for r in listed.resources] == [inbox], listed
        await client.subscribe_resource(inbox)
        await asyncio.sleep(0.3)
        status, sent = relay.rest("POST", "/v1/messages", relay.tokens["alice"],
                                  {"from": "alice", "to": "carol", "body": "news for carol"})
        sent_at = time.perf_counter()
        assert status == 201, sent
        while not updates and time.perf_counter() - sent_at < 5:
            await asyncio.sleep(0.01)
        assert updates and updates[0][0] == inbox, updates
        took = updates[0][1] - sent_at
        assert took < 0.5, f"took {took:.3f} s"
        read = await client.read_resource(inbox, cache_mode="refresh")
        messages = json.loads(read.contents[0].text)
        assert sent["message"]["id"] in [m["id"] for m in messages], messages
        secret = relay.rest("POST", "/v1/messages", relay.tokens["alice"],
                            {"from": "alice", "to": "bob", "body": "not carol's"})[1]
        try:
            await client.read_resource(f"relay://messages/{secret['message']['id']}")
            raise AssertionError("carol read a message between alice and bob")
        except AssertionError:
            raise
        except Exception as error:
            assert "forbidden" in str(error) or "neither" in str(error), error
        await client.unsubscribe_resource(inbox)
        updates.clear()
        relay.rest("POST", "/v1/messages", relay.tokens["alice"],
                   {"from": "alice", "to": "carol", "body": "after unsubscribe"})
        await asyncio.sleep(1)
        assert updates == [], updates


async def a_listen_stream_of_the_2026_era_is_told_of_the_own_inbox_only(relay):
    """Over stdio in the 2026-07-28 era: `subscriptions/listen` honours the own inbox (not
    another agent's) and its stream tells of a send within 500 ms."""
    params = StdioServerParameters(
        command=relay.binary,
        args=["mcp", "--url", relay.base],
        env={"RELAY_TOKEN": relay.tokens["carol"], "RELAY_LOG": "warn"},
    )
    inbox = "relay://agents/carol/inbox"
    async with Client(params, mode="auto") as client:
        async with client.listen(resource_subscriptions=[inbox, "relay://agents/bob/inbox"]) as sub:
            assert sub.honored.resource_subscriptions == [inbox], sub.honored
            await asyncio.sleep(0.3)
            status, sent = relay.rest("POST", "/v1/messages", relay.tokens["alice"],
                                      {"from": "alice", "to": "carol", "body": "listen"})
            sent_at = time.perf_counter()
            assert status == 201, sent
            async for event in sub:
                took = time.perf_counter() - sent_at
                assert str(event.uri) == inbox, event
                assert took < 0.5, f"took {took:.3f} s"
                break


def the_stdio_server_answers_initialize_in_well_under_a_second(relay):
    initialize = json.dumps({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "probe", "version": "0"}},
    }) + "\n"
    started = time.perf_counter()
    process = subprocess.Popen(
        [relay.binary, "mcp", "--url", relay.base], env={"RELAY_TOKEN": relay.tokens["alice"]},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        process.stdin.write(initialize)
        process.stdin.flush()
        answer = json.loads(process.stdout.readline())
        took = time.perf_counter() - started
    finally:
        process.stdin.close()
        process.wait(timeout=10)
    assert "`alice`" in answer["result"]["instructions"], answer
    print(f"     agent-relay mcp: spawned to initialize answered in {took * 1000:.0f} ms")
    assert took < 0.5, f"took {took:.3f} s"


CASES = [
    lists_every_tool_with_object_input_schemas,
    whoami_is_the_token_owner,
    a_message_sent_as_alice_reaches_bob,
    alice_cannot_read_bobs_inbox,
    the_second_claimer_gets_a_conflict,
    claim_next_waits_for_a_job_and_complete_claim_finishes_it,
    a_waiting_fetch_wakes_within_500ms_of_a_send,
    the_operator_token_acts_as_user,
    no_or_a_wrong_token_gets_401,
]


async def main(binary):
    relay = Relay(binary)
    passed = failed = 0
    try:
        for transport in ("legacy", "auto", "stdio"):
            for case in CASES:
                name = f"{case.__name__} [{transport}]"
                try:
                    await asyncio.wait_for(case(relay, transport), timeout=60)
                    passed += 1
                    print(f"ok   {name}")
                except Exception:
                    failed += 1
                    print(f"FAIL {name}")
                    traceback.print_exc()
        for case in (a_subscribed_inbox_resource_is_told_of_a_send_and_not_after_unsubscribe,
                     a_listen_stream_of_the_2026_era_is_told_of_the_own_inbox_only):
            try:
                await asyncio.wait_for(case(relay), timeout=60)
                passed += 1
                print(f"ok   {case.__name__} [stdio]")
            except Exception:
                failed += 1
                print(f"FAIL {case.__name__} [stdio]")
                traceback.print_exc()
        try:
            the_stdio_server_answers_initialize_in_well_under_a_second(relay)
            passed += 1
            print("ok   the_stdio_server_answers_initialize_in_well_under_a_second")
        except Exception:
            failed += 1
            print("FAIL the_stdio_server_answers_initialize_in_well_under_a_second")
            traceback.print_exc()
    finally:
        relay.stop()
    print(f"mcp client tests: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1])))

"""Claude Code's own CLI against the relay: after the README's `claude mcp add ...` (HTTP and
stdio) or its `.mcp.json`, `claude mcp list` reports the relay `✔ Connected`, and not connected
with a wrong token; its health check lists the relay's tools (seen in the relay's debug log).
Then the README's "Three agents in one checkout": the `.mcp.json` that `agent-relay agent add ID
--print claude` prints, one file in one directory, connects as each agent whose token is in the
environment `claude` starts in.
Claude Code needs no login for this: `claude mcp list` only runs each server's health check (no
model is called; this machine reaches no model anyway).

Usage: python claude_check.py PATH/TO/agent-relay PATH/TO/claude
The last line is `claude code checks: N passed, M failed`; the exit status is 1 when any failed.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from test_mcp import OPERATOR, Relay

CONNECTED = "✔ Connected"
TOOLS_LISTED = "mcp tools listed agent="


def main(binary, claude):
    relay = Relay(binary, log="info,agent_relay::mcp=debug")
    home = tempfile.TemporaryDirectory()
    project = tempfile.TemporaryDirectory()
    env = dict(os.environ, HOME=home.name, DISABLE_AUTOUPDATER="1", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1")
    env.pop("RELAY_TOKEN", None)
    # The printed .mcp.json runs `agent-relay` from PATH, as a user's does.
    env["PATH"] = os.path.dirname(binary) + os.pathsep + env.get("PATH", "")
    # A project's .mcp.json servers wait for the user's approval; this user approves them all.
    os.makedirs(os.path.join(home.name, ".claude"))
    with open(os.path.join(home.name, ".claude", "settings.json"), "w") as settings:
        json.dump({"enableAllProjectMcpServers": True}, settings)

    def claude_cli(*args, token=None):
        run_env = env if token is None else dict(env, RELAY_TOKEN=token)
        done = subprocess.run([claude, *args], cwd=project.name, env=run_env, capture_output=True, text=True, timeout=120)
        return done.stdout + done.stderr

    def listed(name, token=None):
        lines = [line for line in claude_cli("mcp", "list", token=token).splitlines() if line.startswith(name + ":")]
        return lines[0] if lines else "(not listed)"

    # The README's forms, with this run's address and tokens.
    url = relay.base + "/mcp"
    mcp_json = os.path.join(project.name, ".mcp.json")

    def add_http(token):
        claude_cli("mcp", "add", "--transport", "http", "agent-relay", url, "--header", f"Authorization: Bearer {token}")

    def add_stdio(token):
        claude_cli("mcp", "add", "agent-relay", "-e", f"RELAY_URL={relay.base}", "-e", f"RELAY_TOKEN={token}", "--", binary, "mcp")

    def write_mcp_json(_token):
        with open(mcp_json, "w") as config:
            json.dump({"mcpServers": {"agent-relay": {
                "type": "http", "url": url, "headers": {"Authorization": "Bearer ${RELAY_TOKEN}"},
            }}}, config)

    def write_channel_json(_token):
        # The README's "Wake an idle agent" entry: the stdio server as a channel, token from the
        # environment.
        with open(mcp_json, "w") as config:
            json.dump({"mcpServers": {"agent-relay": {
                "command": binary, "args": ["mcp", "--permissions"],
                "env": {"RELAY_URL": relay.base, "RELAY_TOKEN": "${RELAY_TOKEN}"},
            }}}, config)

    def remove(form):
        if form.endswith(".mcp.json"):
            os.remove(mcp_json)
        else:
            claude_cli("mcp", "remove", "agent-relay")

    forms = {"http": add_http, "stdio": add_stdio, ".mcp.json": write_mcp_json,
             "channel .mcp.json": write_channel_json}
    passed = failed = 0
    try:
        for form, add in forms.items():
            for token, expect_connected in ((relay.tokens["alice"], True), ("relay_wrong-token", False)):
                add(token)
                seen = len(relay.log)
                # .mcp.json reads the token from the environment (`${RELAY_TOKEN}`).
                line = listed("agent-relay", token=token if form.endswith(".mcp.json") else None)
                remove(form)
                time.sleep(0.2)  # the log line of the last request is written after the answer
                tools_listed = any(TOOLS_LISTED + "alice" in entry for entry in relay.log[seen:])
                connected = CONNECTED in line
                name = f"{form} with {'a valid' if expect_connected else 'a wrong'} token: {line.strip()}"
                if connected == expect_connected and tools_listed == expect_connected:
                    passed += 1
                    print(f"ok   {name}{' (its tools listed)' if tools_listed else ''}")
                else:
                    failed += 1
                    print(f"FAIL {name} (tools listed: {tools_listed})")
        # Several agents in one checkout: the entry the binary prints, written once; each agent's
        # `claude mcp list` in that directory with its own token connects as that agent.
        added = {}
        for agent in ("dana", "erin"):
            done = subprocess.run(
                [binary, "agent", "add", agent, "--print", "claude", "--json"],
                env=dict(env, RELAY_URL=relay.base, RELAY_TOKEN=OPERATOR), capture_output=True, text=True, timeout=60,
            )
            added[agent] = json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr}
        if any("error" in printed for printed in added.values()):
            failed += 1
            print(f"FAIL agent add --print claude: {added}")
        else:
            with open(mcp_json, "w") as config:
                json.dump(added["dana"]["claude"]["mcpJson"], config)
            for agent, printed in added.items():
                seen = len(relay.log)
                line = listed("agent-relay", token=printed["token"])
                time.sleep(0.2)
                tools_listed = any(TOOLS_LISTED + agent in entry for entry in relay.log[seen:])
                name = f"the printed .mcp.json shared by two agents, as {agent}: {line.strip()}"
                if CONNECTED in line and tools_listed:
                    passed += 1
                    print(f"ok   {name} (its tools listed)")
                else:
                    failed += 1
                    print(f"FAIL {name} (tools listed: {tools_listed})")
            os.remove(mcp_json)
    finally:
        relay.stop()
    print(f"claude code checks: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))

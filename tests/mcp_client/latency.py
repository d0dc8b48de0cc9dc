"""Per-call latency of send_message over MCP vs the same send over REST, measured in one run.

Both go over one persistent loopback connection each (httpx2), one call at a time; MCP calls are
raw JSON-RPC `tools/call` POSTs in the handshake era (the server answers with plain JSON), so
the difference is what /mcp adds on the server. The two are interleaved in rounds so drift of the
machine (fsync latency) touches both alike.

Usage: python latency.py PATH/TO/agent-relay [CALLS]
"""

import statistics
import sys
import time

import httpx2

from test_mcp import OPERATOR, Relay


def main(binary, calls):
    relay = Relay(binary)
    try:
        alice = relay.tokens["alice"]
        headers = {"Authorization": f"Bearer {alice}"}
        mcp_headers = headers | {
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2025-11-25",
        }
        rest = httpx2.Client(base_url=relay.base, headers=headers)
        mcp = httpx2.Client(base_url=relay.base, headers=mcp_headers)
        init = mcp.post("/mcp", json={
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "latency", "version": "0"}},
        })
        assert init.status_code == 200, init.text
        mcp.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"})

        def over_rest(i):
            reply = rest.post("/v1/messages", json={"from": "alice", "to": "bob", "body": f"rest {i}"})
            assert reply.status_code == 201, reply.text

        def over_mcp(i):
            reply = mcp.post("/mcp", json={
                "jsonrpc": "2.0", "id": i + 1, "method": "tools/call",
                "params": {"name": "send_message", "arguments": {"to": "bob", "body": f"mcp {i}"}},
            })
            assert reply.status_code == 200 and '"isError":false' in reply.text, reply.text

        for i in range(50):  # warm both paths up
            over_rest(i)
            over_mcp(i)
        times = {"rest": [], "mcp": []}
        for i in range(calls):
            for name, call in (("rest", over_rest), ("mcp", over_mcp)):
                started = time.perf_counter()
                call(i)
                times[name].append(time.perf_counter() - started)
        for name in ("rest", "mcp"):
            median = statistics.median(times[name]) * 1e6
            print(f"send_message over {name.upper():4}: median {median:7.0f} us of {calls} calls")
        extra = (statistics.median(times["mcp"]) - statistics.median(times["rest"])) * 1e6
        print(f"MCP adds {extra:.0f} us per call")
    finally:
        relay.stop()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 500)

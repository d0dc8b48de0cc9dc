import os
import socket
import subprocess
import time
import urllib.request

import pytest

from agent_relay import RelayClient, RelayError
from conftest import RELAY_BINARY

TOKEN = "python-host-operator-token-of-the-client-test"


@pytest.fixture
def served(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RELAY_OPERATOR_TOKEN": TOKEN}
    server = subprocess.Popen([RELAY_BINARY, "serve", "--db", str(tmp_path / "relay.db"),
                               "--listen", f"127.0.0.1:{port}"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/v1/openapi.json", timeout=1).read()
            break
        except OSError:
            assert server.poll() is None, "agent-relay serve exited"
            assert time.monotonic() < deadline, "agent-relay serve did not answer"
            time.sleep(0.05)
    yield url
    server.terminate()
    server.wait(timeout=10)


def test_the_readme_example_against_a_served_relay(served):
    relay = RelayClient(served, TOKEN)
    alice = relay.register_agent(id="alice", label="backend")
    assert alice.token
    relay.send(caller=relay.operator, to="label:backend", body="fix it", claimable=True)
    job = relay.claim_next("alice", token=alice.token, lease_ms=600_000)
    assert job.raw["claimedBy"] == "alice"
    done = relay.complete(job.id, "alice", token=alice.token, result={"pr": "#7"})
    assert done["result"] == {"pr": "#7"}
    inbox = relay.call("poll-inbox", {"agentId": "alice", "query": {}}, bearer=alice.token)
    assert [m["body"] for m in inbox] == ["fix it"]
    with pytest.raises(RelayError) as err:
        relay.call("poll-inbox", {"agentId": "alice", "query": {}}, bearer="relay_wrong")
    assert (err.value.kind, err.value.status) == ("unauthorized", 401)

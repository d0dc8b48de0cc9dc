import os
import socket
import subprocess
import time
import urllib.request

import pytest

from agent_relay import RelayClient, RelayError
from conftest import readme_example, RELAY_BINARY

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
    readme_example(relay)
    with pytest.raises(RelayError) as err:
        relay.call("poll-inbox", {"agentId": "alice", "query": {}}, bearer="relay_wrong")
    assert (err.value.kind, err.value.status) == ("unauthorized", 401)

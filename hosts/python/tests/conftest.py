import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RELAY_BINARY = os.environ.get("RELAY_BINARY", str(Path(__file__).resolve().parents[3] / "target/release/agent-relay"))
FAULTS_DIR = Path(os.environ.get("RELAY_FAULTS_DIR", Path(__file__).resolve().parents[3] / "target/tmp/python-host-faults"))


def readme_example(relay):
    """The README's example, the same steps for the embedded Relay and the RelayClient."""
    alice = relay.register_agent(id="alice", label="backend")
    assert alice.token
    relay.send(caller=relay.operator, to="label:backend", body="fix it", claimable=True)
    job = relay.claim_next("alice", token=alice.token, lease_ms=600_000)
    assert job.raw["claimedBy"] == "alice"
    done = relay.complete(job.id, "alice", token=alice.token, result={"pr": "#7"})
    assert done["result"] == {"pr": "#7"}
    inbox = relay.call("poll-inbox", {"agentId": "alice", "query": {}}, bearer=alice.token)
    assert [m["body"] for m in inbox] == ["fix it"]

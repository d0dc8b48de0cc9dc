import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from agent_relay import Relay, RelayError
from conftest import readme_example, FAULTS_DIR, RELAY_BINARY

PACKAGE = Path(__file__).resolve().parent.parent / "agent_relay"


def test_shipped_component_is_what_the_binary_writes(tmp_path):
    for args, name in ((["--out"], "relay.wasm"), (["--signatures", "--out"], "signatures.json")):
        out = tmp_path / name
        subprocess.run([RELAY_BINARY, "component", *args, str(out)], check=True)
        assert out.read_bytes() == (PACKAGE / name).read_bytes(), name


def test_readme_example(tmp_path):
    relay = Relay.open(tmp_path / "relay.db")
    readme_example(relay)
    relay.close()
    # Committed: a second relay on the same file sees the agent.
    again = Relay.open(tmp_path / "relay.db")
    assert again.call("get-agent", {"agentId": "alice"})["id"] == "alice"


def test_relay_errors_carry_kind_and_status(tmp_path):
    relay = Relay.open(tmp_path / "relay.db")
    relay.register_agent(id="alice")
    with pytest.raises(RelayError) as err:
        relay.call("poll-inbox", {"agentId": "alice", "query": {}}, bearer="relay_wrong")
    assert (err.value.kind, err.value.status) == ("unauthorized", 401)
    with pytest.raises(RelayError) as err:
        relay.call("get-agent", {"agentId": "nobody"})
    assert (err.value.kind, err.value.status) == ("not_found", 404)


@pytest.mark.parametrize("args, field", [
    ({"input": {"id": 7}}, "input.id"),
    ({"input": {"id": "a", "tags": "x"}}, "input.tags"),
    ({"input": {"id": "a", "bogus": 1}}, "input.bogus"),
    ({"input": "alice"}, "input"),
])
def test_wrong_types_name_the_field(tmp_path, args, field):
    relay = Relay.open(tmp_path / "relay.db")
    with pytest.raises(RelayError) as err:
        relay.call("register-agent", args)
    assert (err.value.kind, err.value.status) == ("invalid", 400)
    assert field in err.value.message
    with pytest.raises(RelayError) as err:
        relay.call("get-agent", {"agentId": "a"})
    assert err.value.kind == "not_found"


def test_not_sqlite_is_refused_at_open(tmp_path):
    path = tmp_path / "relay.db"
    path.write_bytes(b"this is not a database, just some text long enough")
    with pytest.raises(RelayError, match="not an SQLite database"):
        Relay.open(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files")
def test_read_only_is_refused_at_open(tmp_path):
    path = tmp_path / "relay.db"
    Relay.open(path).close()
    path.chmod(0o444)
    with pytest.raises(RelayError, match="read-only"):
        Relay.open(path)


def faulty(tmp_path, **options):
    return Relay.open(tmp_path / "relay.db", component=FAULTS_DIR / "relay.wasm",
                      signatures=FAULTS_DIR / "signatures.json", settings={"fault-injection": "on"}, **options)


def test_a_looping_call_is_stopped_within_twice_the_limit(tmp_path):
    relay = faulty(tmp_path, time_limit_s=1.0)
    started = time.monotonic()
    with pytest.raises(RelayError) as err:
        relay.call("fault-write-then-spin", {"body": "spun"})
    took = time.monotonic() - started
    assert (err.value.kind, err.value.status, err.value.limit) == ("internal", 500, "time")
    assert 1.0 <= took < 2.0, took
    # Rolled back, and the next call works.
    relay.register_agent(id="after")
    assert [m["body"] for m in relay.call("list-messages", {})] == []


def test_memory_past_the_limit_fails_cleanly(tmp_path):
    relay = faulty(tmp_path, memory_limit=32 << 20)
    with pytest.raises(RelayError) as err:
        relay.call("fault-write-then-exhaust-memory", {"body": "big"})
    assert (err.value.kind, err.value.status, err.value.limit) == ("internal", 500, "memory")
    relay.register_agent(id="after")
    assert [m["body"] for m in relay.call("list-messages", {})] == []


def test_a_trap_rolls_back(tmp_path):
    relay = faulty(tmp_path)
    with pytest.raises(RelayError) as err:
        relay.call("fault-write-then-trap", {"body": "trapped"})
    assert (err.value.kind, err.value.limit) == ("internal", None)
    assert relay.call("list-messages", {}) == []


def test_a_component_of_another_version_is_refused(tmp_path):
    signatures = json.loads((PACKAGE / "signatures.json").read_text())
    signatures["package"] = "agent-relay:relay@0.5.0"
    (tmp_path / "signatures.json").write_text(json.dumps(signatures))
    with pytest.raises(RelayError) as err:
        Relay.open(tmp_path / "relay.db", signatures=tmp_path / "signatures.json")
    assert "0.5.0" in err.value.message and "0.6.0" in err.value.message

"""Conformance on the Python host: the behaviour cases in tests/conformance/*.json (the files the Rust
runner tests/all/conformance.rs and hosts/node/conformance.mjs read; the format is described in the
Rust runner), one test per case, each answer compared with the Rust host's transcript in
target/tmp/conformance (written by `cargo test --release -p agent-relay --test all --
conformance::sqlite`; RELAY_CONFORMANCE_DIR to read another). A failing step, a missing
transcript or an answer that differs from the Rust host's fails the case."""

import json
import os
import re
from pathlib import Path

import pytest

from agent_relay import Clock, Relay, RelayError
from conftest import FAULTS_DIR

ROOT = Path(__file__).resolve().parents[3]
CASES = ROOT / "tests" / "conformance"
TRANSCRIPTS = Path(os.environ.get("RELAY_CONFORMANCE_DIR", ROOT / "target" / "tmp" / "conformance"))
# The instant every host's clock starts at: 2026-01-01T00:00:00Z.
START_MS = 1_767_225_600_000
MISSING = object()


def js(value) -> str:
    """JSON.stringify's spelling, for messages and substitutions."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def type_of(value) -> str:
    if value is MISSING or value is None:
        return "absent"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object"


def same(a, b) -> bool:
    """Node's isDeepStrictEqual on JSON values: a boolean is never a number, 1 equals 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def resolve_pointer(value, pointer):
    if pointer == "":
        return value
    at = value
    for raw in pointer.split("/")[1:]:
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(at, dict) and key in at:
            at = at[key]
        elif isinstance(at, list) and key.isdigit() and int(key) < len(at):
            at = at[int(key)]
        else:
            return MISSING
    return at


class Memory:
    def __init__(self):
        self.values = {}
        self.tokens = {}

    def substitute(self, value):
        if isinstance(value, str):
            whole = re.fullmatch(r"\$\{([^}]+)\}", value)
            if whole and whole.group(1) in self.values:
                return self.values[whole.group(1)]
            out = value
            for name, found in self.values.items():
                out = out.replace("${" + name + "}", found if isinstance(found, str) else js(found))
            return out
        if isinstance(value, list):
            return [self.substitute(v) for v in value]
        if isinstance(value, dict):
            return {k: self.substitute(v) for k, v in value.items()}
        return value

    def caller(self, spec):
        if spec is None or spec == "operator":
            return "operator"
        if spec == "anonymous":
            return "anonymous"
        if isinstance(spec, dict) and "token of" in spec:
            if spec["token of"] not in self.tokens:
                raise AssertionError(f"no token was handed out for {spec['token of']}")
            return {"bearer": self.tokens[spec["token of"]]}
        if isinstance(spec, dict) and "bearer" in spec:
            return {"bearer": spec["bearer"]}
        raise AssertionError(f"unknown caller {js(spec)}")

    def learn(self, step, answer):
        if isinstance(answer, dict) and isinstance(answer.get("token"), str) \
                and isinstance(answer.get("agent"), dict) and isinstance(answer["agent"].get("id"), str):
            self.tokens[answer["agent"]["id"]] = answer["token"]
        for name, pointer in (step.get("capture") or {}).items():
            found = resolve_pointer(answer, pointer)
            if found is MISSING:
                raise AssertionError(f"capture {name}: nothing at {pointer} in {js(answer)}")
            self.values[name] = found


def matches(expected, actual, at):
    """Raises where `actual` lacks what `expected` names."""
    if isinstance(expected, dict) and isinstance(expected.get("$oneOf"), list):
        if not any(same(o, actual) for o in expected["$oneOf"]):
            raise AssertionError(f"{at}: {js(actual) if actual is not MISSING else 'undefined'} is none of {js(expected['$oneOf'])}")
        return
    if isinstance(expected, dict) and isinstance(expected.get("$type"), str):
        if type_of(actual) != expected["$type"]:
            raise AssertionError(f"{at}: expected a {expected['$type']}, got {actual!r}")
        return
    if isinstance(expected, dict) and "$absent" in expected:
        if actual is not MISSING and actual is not None:
            raise AssertionError(f"{at}: expected no value, got {js(actual)}")
        return
    if actual is MISSING:
        raise AssertionError(f"{at}: missing, expected {js(expected)}")
    if isinstance(expected, dict) and isinstance(actual, dict):
        for k, v in expected.items():
            matches(v, actual.get(k, MISSING), f"{at}/{k}")
        return
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            raise AssertionError(f"{at}: expected {len(expected)} items, got {len(actual)}: {js(actual)}")
        for i, (w, a) in enumerate(zip(expected, actual)):
            matches(w, a, f"{at}/{i}")
        return
    if not same(expected, actual):
        raise AssertionError(f"{at}: expected {js(expected)}, got {js(actual)}")


def redact(value):
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, dict):
        return {k: "<token>" if k == "token" and isinstance(v, str) else redact(v) for k, v in value.items()}
    return value


def call_step(relay, memory, step):
    if not isinstance(step.get("call"), str):
        raise AssertionError("a step needs call")
    caller = memory.caller(step.get("caller"))
    args = memory.substitute(step.get("args", {}))
    try:
        return {"ok": relay.call(step["call"], args, caller=caller)}
    except RelayError as error:
        return {"error": error}


def answer_json(result):
    if "ok" in result:
        return {"ok": redact(result["ok"])}
    # How a trap is worded is the host's own; the relay's messages must match.
    if result["error"].kind == "internal":
        return {"error": "internal"}
    return {"error": result["error"].kind, "message": result["error"].message}


def check(expect, result):
    if expect and "error" in expect:
        if "ok" in result:
            raise AssertionError(f"expected error {expect['error']}, got ok {js(result['ok'])}")
        if result["error"].kind != expect["error"]:
            raise AssertionError(f"expected error {expect['error']}, got {result['error'].kind}: {result['error'].message}")
        return
    if "error" in result:
        raise AssertionError(f"expected ok, got {result['error'].kind}: {result['error'].message}")
    if expect and "ok" in expect:
        matches(expect["ok"], result["ok"], "")


def race_outcome(results):
    winners = sum(1 for r in results if "ok" in r)
    losers = sorted(r["error"].kind for r in results if "error" in r)
    return {"race": {"winners": winners, "losers": losers}}


def check_race(expect, entry):
    if not expect:
        return
    race = entry["race"]
    if "winners" in expect and expect["winners"] != race["winners"]:
        raise AssertionError(f"expected {expect['winners']} winner(s), got {js(race)}")
    if "othersError" in expect and any(c != expect["othersError"] for c in race["losers"]):
        raise AssertionError(f"the losers must all get {expect['othersError']}: {js(race)}")


def run_case(case, db):
    """Runs one case on a fresh database; returns its transcript or raises at the failing step."""
    clock = Clock.fixed(START_MS)
    relay = Relay.open(db, clock=clock, settings=case.get("settings") or {},
                       component=FAULTS_DIR / "relay.wasm", signatures=FAULTS_DIR / "signatures.json")
    memory = Memory()
    transcript = []
    try:
        for i, step in enumerate(case["steps"]):
            try:
                if isinstance(step.get("advanceMs"), (int, float)) and not isinstance(step.get("advanceMs"), bool):
                    clock.advance(step["advanceMs"])
                if isinstance(step.get("race"), list):
                    # One thread: the racers run one after the other; the store serializes them either way.
                    entry = race_outcome([call_step(relay, memory, racer) for racer in step["race"]])
                    check_race(step.get("expect"), entry)
                    transcript.append(entry)
                    continue
                if "call" not in step:
                    continue
                result = call_step(relay, memory, step)
                check(None if "expect" not in step else memory.substitute(step["expect"]), result)
                if "ok" in result:
                    memory.learn(step, result["ok"])
                answer = "depends on which racer won" if step.get("dependsOnRace") else answer_json(result)
                transcript.append({"step": i, "call": step["call"], "answer": answer})
            except AssertionError as error:
                raise AssertionError(f"step {i} ({step.get('call', 'race')}): {error}") from None
    finally:
        relay.close()
    return transcript


def first_difference(ours, theirs, at=""):
    if same(ours, theirs):
        return None
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for k in list(ours) + [k for k in theirs if k not in ours]:
            d = first_difference(ours.get(k, MISSING), theirs.get(k, MISSING), f"{at}/{k}")
            if d:
                return d
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        for i, (o, t) in enumerate(zip(ours, theirs)):
            d = first_difference(o, t, f"{at}/{i}")
            if d:
                return d
    show = lambda v: "undefined" if v is MISSING else js(v)
    return f"{at or '/'}: python {show(ours)} but rust {show(theirs)}"


CASE_FILES = sorted(CASES.glob("*.json"))


def test_there_are_cases():
    assert CASE_FILES, f"no cases in {CASES}"


@pytest.mark.parametrize("path", CASE_FILES, ids=[p.stem for p in CASE_FILES])
def test_same_answers_as_the_rust_host(path, tmp_path):
    case = json.loads(path.read_text())
    theirs = TRANSCRIPTS / path.name
    assert theirs.exists(), f"the Rust host left no transcript at {theirs}"
    transcript = run_case(case, tmp_path / "relay.db")
    difference = first_difference(transcript, json.loads(theirs.read_text()))
    assert difference is None, f"answers differ from the Rust host's at {difference}"

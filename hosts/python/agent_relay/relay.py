"""The relay component in Python: the same .wasm the Rust host embeds (`agent-relay component`),
on wasmtime-py, given the store capability over sqlite3. Each call instantiates the component
afresh (compiled once) inside one transaction: committed when the export returns ok, rolled back
on its error, on a trap, or when a limit stops it."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wasmtime import Config, Engine, Store, WasiConfig, WasmtimeError
from wasmtime.component import Component, Linker, Record, Variant

from .bridge import BridgeError, arguments_of, camel, status_of, to_json, which_case
from . import _speedups
from .store import SqliteStore, StoreError

_speedups.install()

HERE = Path(__file__).resolve().parent
TICK_S = 0.01
DEFAULT_TIME_LIMIT_S = 5.0
DEFAULT_MEMORY_LIMIT = 64 * 1024 * 1024
# The relay's WIT package version this package speaks (the `package` of signatures.json).
COMPONENT_VERSION = "0.6.0"


class RelayError(Exception):
    """The relay's error: `kind` (snake_case, as the HTTP API's `error.code`), `status` (its HTTP
    status), `message`; `limit` is "time" or "memory" when a limit stopped the call."""

    def __init__(self, kind: str, status: int, message: str, limit: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.message = message
        self.limit = limit


@dataclass
class Agent:
    id: str
    token: str | None = None
    raw: dict | None = None


@dataclass
class Message:
    id: int
    raw: dict


class Clock:
    """The relay's wall clock: the system clock (or a fixed start) plus an offset that can be
    moved, as the Node host's `Clock` and the Rust host's `Clock::fixed` (the conformance runs)."""

    def __init__(self, start_ms: int | None = None):
        self.start_ms = start_ms
        self.offset_ms = 0

    @classmethod
    def fixed(cls, start_ms: int) -> "Clock":
        return cls(start_ms)

    def advance(self, ms: int) -> None:
        self.offset_ms += ms

    def now_ms(self) -> int:
        base = self.start_ms if self.start_ms is not None else time.time_ns() // 1_000_000
        return base + self.offset_ms

    def define(self, linker: Linker, imports) -> None:
        """Shadows `wasi:clocks/wall-clock` (each version the component imports) with this clock."""

        def now(_store):
            ms = self.now_ms()
            d = Record()
            d.seconds, d.nanoseconds = ms // 1000, (ms % 1000) * 1_000_000
            return d

        def resolution(_store):
            d = Record()
            d.seconds, d.nanoseconds = 0, 1_000_000
            return d

        linker.allow_shadowing = True
        with linker.root() as root:
            for name in imports:
                if name.startswith("wasi:clocks/wall-clock@"):
                    with root.add_instance(name) as iface:
                        iface.add_func("now", now)
                        iface.add_func("resolution", resolution)


def _caller(caller, bearer):
    if bearer is not None:
        return Variant("bearer", bearer)
    if caller in ("operator", "anonymous"):
        return Variant(caller)
    if isinstance(caller, dict) and isinstance(caller.get("bearer"), str):
        return Variant("bearer", caller["bearer"])
    raise RelayError("invalid", 400, f"unknown caller {caller!r}")


class Helpers:
    """The typed helpers, shared by `Relay` (in-process) and `RelayClient` (served), over `call`."""

    operator = "operator"

    def register_agent(self, id: str, label: str | None = None, **fields) -> Agent:
        body = {"id": id, **fields}
        if label is not None:
            body["label"] = label
        out = self.call("register-agent", {"input": body})
        return Agent(id=out.get("id", id), token=out.get("token"), raw=out)

    def send(self, *, caller="operator", bearer=None, to: str, body, sender: str = "user", **fields) -> Message:
        """Sends `body` to `to`; `sender` is the message's `from` ("user", as the README's operator examples, by default)."""
        message = {"from": sender, "to": to, "body": body, **_camel(fields)}
        out = self.call("send-message", {"input": message}, caller=caller, bearer=bearer)
        return Message(id=out["message"]["id"], raw=out["message"])

    def claim_next(self, agent_id: str, *, token: str | None = None, **fields) -> Message | None:
        out = self.call("claim-next", {"agentId": agent_id, "input": _camel(fields)}, bearer=token)
        msg = out.get("message") if isinstance(out, dict) and "message" in out else out
        return None if not msg else Message(id=msg.get("id"), raw=msg)

    def complete(self, message_id: int, agent_id: str, *, token: str | None = None, **fields):
        return self.call("complete-claim", {"messageId": message_id, "input": {"agentId": agent_id, **_camel(fields)}},
                         bearer=token)

    def poll_inbox(self, agent_id: str, *, token: str | None = None, **query):
        return self.call("poll-inbox", {"agentId": agent_id, "query": _camel(query)}, bearer=token)


class _Ticker:
    """One thread per engine that moves its epoch every TICK_S."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped.wait(TICK_S):
            self.engine.increment_epoch()


class Relay(Helpers):

    def __init__(self, path, *, time_limit_s=DEFAULT_TIME_LIMIT_S, memory_limit=DEFAULT_MEMORY_LIMIT,
                 settings=None, synchronous="FULL", component=None, signatures=None, clock=None):
        self.clock = clock
        self.time_limit_s = time_limit_s
        self.memory_limit = memory_limit
        component = Path(component or HERE / "relay.wasm")
        signatures = Path(signatures or HERE / "signatures.json")
        sig = json.loads(signatures.read_text())
        self.package = sig.get("package")
        version = (self.package or "").partition("@")[2]
        if version != COMPONENT_VERSION:
            raise RelayError("invalid", 400, f"the component in {component} is agent-relay {version or 'of no version'}; "
                             f"this package speaks agent-relay {COMPONENT_VERSION}")
        self.signatures = {s["name"]: s for s in sig["exports"]}
        path = str(path)
        if os.path.exists(path):
            with open(path, "rb") as f:
                head = f.read(16)
            if head and head != b"SQLite format 3\x00":
                raise RelayError("invalid", 400, f"{path} is not an SQLite database")
            if not os.access(path, os.W_OK):
                raise RelayError("invalid", 400, f"{path} is read-only: the relay needs to write it")
        try:
            self.store = SqliteStore(path, synchronous=synchronous, run_settings=settings)
        except Exception as error:
            raise RelayError("invalid", 400, f"cannot open {path} as the relay's database: {error}") from None
        config = Config()
        config.epoch_interruption = True
        self.engine = Engine(config)
        self.component = Component.from_file(self.engine, str(component))
        self.linker = Linker(self.engine)
        self.linker.add_wasip2()
        with self.linker.root() as root:
            with root.add_instance(self._store_interface()) as iface:
                self.store.define(iface)
        if clock is not None:
            clock.define(self.linker, self.component.type.imports(self.engine))
        self._ticker = _Ticker(self.engine)
        self._exports: dict[str, Any] = {}

    def _store_interface(self) -> str:
        pkg = self.package or "agent-relay:relay"
        name = pkg.split("@")[0]
        version = pkg.split("@")[1] if "@" in pkg else None
        return f"{name}/store" + (f"@{version}" if version else "")

    @classmethod
    def open(cls, path, **options) -> "Relay":
        """Opens (creating if needed) the SQLite database at `path` and migrates its schema."""
        relay = cls(path, **options)
        relay.schema = relay.call("migrate", {})
        return relay

    def close(self) -> None:
        self._ticker.stopped.set()
        self.store.close()

    def exports(self):
        return list(self.signatures.values())

    def call(self, export: str, args: dict | None = None, *, bearer: str | None = None, caller="operator"):
        """Calls any export with JSON arguments keyed by camelCase parameter names; returns JSON."""
        signature = self.signatures.get(export)
        if signature is None:
            raise RelayError("not_found", 404, f"the relay component has no export {export}")
        if args is not None and not isinstance(args, dict):
            raise RelayError("invalid", 400, "the arguments must be an object")
        try:
            values = arguments_of(signature, _caller(caller, bearer), args or {})
        except BridgeError as error:
            raise RelayError("invalid", 400, str(error)) from None
        result = signature.get("result")
        outcome = self._call(signature, values)
        if result and "result" in result:
            case, payload = which_case(result, outcome)
            if case == "err":
                kind, message = which_case(result["result"]["err"], payload)
                raise RelayError(kind.replace("-", "_"), status_of(kind), str(message or kind))
            ok_ty = result["result"].get("ok")
            return to_json(payload, ok_ty) if ok_ty else None
        return to_json(outcome, result) if result else None

    def _call(self, signature, values):
        try:
            self.store.begin(signature["access"])
        except StoreError as error:
            kind, status = ("storage_full", 507) if error.kind == "full" else ("unavailable", 503)
            raise RelayError(kind, status, f"the database refused the call: {error}") from None
        ok = False
        started = time.monotonic()
        try:
            store = Store(self.engine)
            store.set_wasi(WasiConfig())
            store.set_limits(memory_size=self.memory_limit)
            store.set_epoch_deadline(max(1, int(self.time_limit_s / TICK_S)))
            instance = self.linker.instantiate(store, self.component)
            func = self._func(store, instance, signature)
            outcome = func(store, *values)
            result = signature.get("result")
            ok = not (result and "result" in result and which_case(result, outcome)[0] == "err")
            return outcome
        except WasmtimeError as error:
            elapsed = time.monotonic() - started
            text = str(error)
            cause = text.strip().splitlines()[-1].strip() if text.strip() else text
            limit = None
            if "interrupt" in text or elapsed >= self.time_limit_s:
                limit = "time"
            elif "handle_alloc_error" in text or "memory allocation" in text:
                limit = "memory"
            if limit is None:
                raise RelayError("internal", 500, f"{signature['name']} failed inside the relay component: {cause}") from None
            what = {"time": f"it ran past the time limit ({self.time_limit_s} s)",
                    "memory": f"it needed more than the memory limit ({self.memory_limit} bytes)"}[limit]
            raise RelayError("internal", 500, f"{signature['name']} was stopped: {what}", limit) from None
        finally:
            try:
                self.store.finish(ok)
            except StoreError as error:
                raise RelayError("unavailable", 503, f"the database failed: {error}") from None

    def _func(self, store, instance, signature):
        iface_name = signature["interface"]
        pkg = (self.package or "agent-relay:relay")
        name, _, version = pkg.partition("@")
        full = f"{name}/{iface_name}" + (f"@{version}" if version else "")
        iface = instance.get_export_index(store, full)
        if iface is None:
            raise RelayError("internal", 500, f"the component does not export {full}")
        idx = instance.get_export_index(store, signature["name"], iface)
        return instance.get_func(store, idx)


def _camel(fields: dict) -> dict:
    return {camel(k.replace("_", "-")): v for k, v in fields.items()}



"""The JSON <-> WIT bridge of the Python host: the mapping of the Rust host's bridge and
hosts/node/bridge.mjs (camelCase JSON names, `record { json: string }` as the JSON object itself,
absent option fields left out, an explicit null for `option<option<T>>` meaning some(none)),
driven by the component's own types (`signatures.json`, from `agent-relay component
--signatures`), producing the values wasmtime-py takes: Record objects with
attributes named as in the WIT (kebab-case), `Variant(tag, payload)` where wasmtime-py tags a variant, the bare payload where it
does not (it tags exactly when two cases share a Python class)."""

from __future__ import annotations

import json
import re

from wasmtime.component import Record, Variant

INTEGERS = {
    "s8": (-(2**7), 2**7 - 1), "s16": (-(2**15), 2**15 - 1), "s32": (-(2**31), 2**31 - 1),
    "s64": (-(2**63), 2**63 - 1), "u8": (0, 2**8 - 1), "u16": (0, 2**16 - 1),
    "u32": (0, 2**32 - 1), "u64": (0, 2**64 - 1),
}


class BridgeError(Exception):
    pass


def camel(kebab: str) -> str:
    return re.sub(r"-([a-z0-9])", lambda m: m.group(1).upper(), kebab)


def is_option(ty) -> bool:
    return isinstance(ty, dict) and "option" in ty


def is_json_text(ty) -> bool:
    return isinstance(ty, dict) and ty.get("record") and len(ty["record"]) == 1 \
        and ty["record"][0]["name"] == "json" and ty["record"][0]["type"] == "string"


def _cases(ty):
    if is_option(ty):
        return [("none", None), ("some", ty["option"])]
    if "result" in ty:
        return [("ok", ty["result"].get("ok")), ("err", ty["result"].get("err"))]
    return [(c["name"], c.get("type")) for c in ty["variant"]]


_TAGGED: dict[str, bool] = {}


def tagged(ty) -> bool:
    key = json.dumps(ty, sort_keys=True)
    if key not in _TAGGED:
        seen: set = set()
        result = False
        for _, t in _cases(ty):
            case = {object} if t is None else classes(t)
            if case & seen:
                result = True
                break
            seen |= case
        _TAGGED[key] = result
    return _TAGGED[key]


def classes(ty) -> set:
    """The Python classes wasmtime-py uses for a value of `ty` (its `add_classes`)."""
    if isinstance(ty, str):
        return {"bool": {bool}, "f32": {float}, "f64": {float}, "char": {str}, "string": {str}}.get(ty, {int})
    if "list" in ty:
        return {bytes} if ty["list"] == "u8" else {list}
    if "record" in ty:
        return {Record}
    if "tuple" in ty:
        return {tuple}
    if "enum" in ty:
        return {str}
    if "flags" in ty:
        return {set}
    if tagged(ty):
        return {Variant}
    out: set = set()
    for _, t in _cases(ty):
        out |= {object} if t is None else classes(t)
    return out


def describe(ty) -> str:
    if ty == "bool":
        return "a boolean"
    if isinstance(ty, str) and ty in INTEGERS:
        return "an integer"
    if ty in ("f32", "f64"):
        return "a number"
    if ty in ("char", "string"):
        return "a string"
    if "list" in ty:
        return "an array"
    if "enum" in ty:
        return "one of " + ", ".join(ty["enum"])
    if is_option(ty):
        return describe(ty["option"])
    if is_json_text(ty):
        return "a JSON object"
    return "an object"


def _join(at: str, key: str) -> str:
    return f"{at}.{key}" if at else key


def _case(ty, name, payload):
    return Variant(name, payload) if tagged(ty) else payload


def _none(ty):
    return _case(ty, "none", None)


def absent(ty, at):
    if is_option(ty):
        return _none(ty)
    if is_json_text(ty):
        r = Record()
        r.json = "{}"
        return r
    raise BridgeError(f"{at} is required ({describe(ty)})")


def canonical_json(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _scalar(value, ty, at, wrong):
    if ty == "bool":
        if not isinstance(value, bool):
            raise wrong()
        return value
    if ty in INTEGERS:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise wrong()
        n = int(value)
        lo, hi = INTEGERS[ty]
        if n < lo or n > hi:
            raise BridgeError(f"{at} is out of range for its type")
        return n
    if ty in ("f32", "f64"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong()
        return float(value)
    if ty == "char":
        if not isinstance(value, str) or len(value) != 1:
            raise BridgeError(f"{at} must be a single character")
        return value
    if not isinstance(value, str):
        raise wrong()
    return value


def from_json(value, ty, at):
    """JSON to the wasmtime-py value of WIT type `ty`; `at` names the place in errors."""
    def wrong():
        return BridgeError(f"{at} must be {describe(ty)}")

    if isinstance(ty, str):
        return _scalar(value, ty, at, wrong)
    if is_option(ty):
        if value is None:
            inner = ty["option"]
            return _case(ty, "some", from_json(None, inner, at)) if is_option(inner) else _none(ty)
        return _case(ty, "some", from_json(value, ty["option"], at))
    if is_json_text(ty):
        if not isinstance(value, dict):
            raise wrong()
        r = Record()
        r.json = canonical_json(value)
        return r
    if "enum" in ty:
        if value not in ty["enum"]:
            raise wrong()
        return value
    if "list" in ty:
        if not isinstance(value, list):
            raise wrong()
        items = [from_json(item, ty["list"], f"{at}[{i}]") for i, item in enumerate(value)]
        return bytes(items) if ty["list"] == "u8" else items
    if "record" in ty:
        if not isinstance(value, dict):
            raise wrong()
        known = [camel(f["name"]) for f in ty["record"]]
        for k in value:
            if k not in known:
                raise BridgeError(f"{_join(at, k)} is not a known field; expected: {', '.join(known)}")
        r = Record()
        for field in ty["record"]:
            key = camel(field["name"])
            place = _join(at, key)
            setattr(r, field["name"], from_json(value[key], field["type"], place)
                    if key in value else absent(field["type"], place))
        return r
    if "tuple" in ty:
        if not isinstance(value, list):
            raise wrong()
        if len(value) != len(ty["tuple"]):
            raise BridgeError(f"{at} must be an array of {len(ty['tuple'])} items")
        return tuple(from_json(v, t, f"{at}[{i}]") for i, (v, t) in enumerate(zip(value, ty["tuple"])))
    if "variant" in ty:
        if isinstance(value, str):
            name, payload, has = value, None, False
        elif isinstance(value, dict) and len(value) == 1:
            (name, payload), = value.items()
            has = True
        else:
            raise BridgeError(f'{at} must be a case name or {{"case": value}}')
        kase = next((c for c in ty["variant"] if c["name"] == name), None)
        if kase is None:
            raise BridgeError(f"{at} must be one of {', '.join(c['name'] for c in ty['variant'])}")
        if "type" in kase and not has:
            raise BridgeError(f"{at}.{name} needs a value")
        if "type" not in kase and has:
            raise BridgeError(f"{at}.{name} takes no value")
        val = from_json(payload, kase["type"], f"{at}.{name}") if "type" in kase else None
        return _case(ty, name, val)
    if "flags" in ty:
        if not isinstance(value, list):
            raise wrong()
        for item in value:
            if item not in ty["flags"]:
                raise BridgeError(f"{at} entries must be among {', '.join(ty['flags'])}")
        return set(value)
    raise BridgeError(f"{at} has a type the JSON bridge cannot carry")


def which_case(ty, value):
    """(case name, payload) of a lifted variant-like value."""
    if tagged(ty):
        return value.tag, value.payload
    for name, t in _cases(ty):
        if t is None:
            if value is None:
                return name, None
        elif isinstance(value, tuple(classes(t))):
            return name, value
    raise BridgeError("a value the component's type does not allow")


def to_json(value, ty):
    """A wasmtime-py value of WIT type `ty` to JSON; option none fields of records left out."""
    if isinstance(ty, str):
        return value
    if is_option(ty):
        name, payload = which_case(ty, value)
        return None if name == "none" else to_json(payload, ty["option"])
    if is_json_text(ty):
        try:
            return json.loads(value.json)
        except ValueError:
            return {}
    if "enum" in ty:
        return value
    if "list" in ty:
        return [to_json(v, ty["list"]) for v in value]
    if "tuple" in ty:
        return [to_json(v, t) for v, t in zip(value, ty["tuple"])]
    if "record" in ty:
        out = {}
        for field in ty["record"]:
            v = getattr(value, field["name"])
            if is_option(field["type"]) and which_case(field["type"], v)[0] == "none":
                continue
            out[camel(field["name"])] = to_json(v, field["type"])
        return out
    if "variant" in ty:
        name, payload = which_case(ty, value)
        kase = next(c for c in ty["variant"] if c["name"] == name)
        if "type" not in kase:
            return name
        return {camel(name): to_json(payload, kase["type"])}
    if "flags" in ty:
        return [f for f in ty["flags"] if f in value]
    return None


STATUS = {
    "invalid": 400, "unauthorized": 401, "forbidden": 403, "not-found": 404, "conflict": 409,
    "stale-session": 409, "cancelled": 409, "too-large": 413, "unavailable": 503, "storage-full": 507,
}


def status_of(kind: str) -> int:
    return STATUS.get(kind, 500)


def arguments_of(signature, caller, named: dict):
    known = [camel(p["name"]) for p in signature["params"] if p["name"] != "caller"]
    for k in named:
        if k not in known:
            raise BridgeError(f"{signature['name']} takes no argument {k}; its arguments: {', '.join(known)}")
    out = []
    for p in signature["params"]:
        name, ty = p["name"], p["type"]
        key = camel(name)
        if name == "caller":
            out.append(caller)
        elif key in named:
            out.append(from_json(named[key], ty, key))
        elif name == "query":
            out.append(from_json({}, ty, ""))
        elif name == "input":
            try:
                out.append(from_json({}, ty, ""))
            except BridgeError as e:
                raise BridgeError(f"a JSON body is required: {e}") from None
        else:
            out.append(absent(ty, key))
    return out

// The JSON <-> WIT bridge of the Node host, the same mapping as the Rust host's host/src/bridge.rs:
// camelCase JSON names, `record { json: string }` as the JSON object itself, absent option fields
// left out, an explicit `null` for `option<option<T>>` meaning some(none).
//
// It is driven by the component's own types (`agent-relay component --signatures`) and produces
// the values jco's bindings take: records with camelCase fields, s64/u64 as BigInt, option<T> as
// T | undefined (a nested option as {tag: 'some' | 'none'}), variants as {tag, val}, enums as
// strings.

export class BridgeError extends Error {}

export function camelCase(kebab) {
  return kebab.replace(/-([a-z0-9])/g, (_, c) => c.toUpperCase());
}

const INTEGERS = {
  s8: [-(2n ** 7n), 2n ** 7n - 1n],
  s16: [-(2n ** 15n), 2n ** 15n - 1n],
  s32: [-(2n ** 31n), 2n ** 31n - 1n],
  s64: [-(2n ** 63n), 2n ** 63n - 1n],
  u8: [0n, 2n ** 8n - 1n],
  u16: [0n, 2n ** 16n - 1n],
  u32: [0n, 2n ** 32n - 1n],
  u64: [0n, 2n ** 64n - 1n],
};

const isJsonText = (ty) =>
  ty?.record?.length === 1 && ty.record[0].name === 'json' && ty.record[0].type === 'string';

const isOption = (ty) => ty !== null && typeof ty === 'object' && 'option' in ty;

function describe(ty) {
  if (ty === 'bool') return 'a boolean';
  if (ty in INTEGERS) return 'an integer';
  if (ty === 'f32' || ty === 'f64') return 'a number';
  if (ty === 'char' || ty === 'string') return 'a string';
  if (ty.list) return 'an array';
  if (ty.enum) return `one of ${ty.enum.join(', ')}`;
  if (isOption(ty)) return describe(ty.option);
  if (isJsonText(ty)) return 'a JSON object';
  return 'an object';
}

const join = (at, key) => (at ? `${at}.${key}` : key);
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

// JSON text with sorted keys, as serde_json writes it: both hosts store the same bytes.
export function canonicalJson(value) {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (isObject(value)) {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

function some(ty, value) {
  return isOption(ty.option) ? { tag: 'some', val: value } : value;
}

function none(ty) {
  return isOption(ty.option) ? { tag: 'none' } : undefined;
}

/** The value of a field or parameter the caller left out. */
function absent(ty, at) {
  if (isOption(ty)) return none(ty);
  if (isJsonText(ty)) return { json: '{}' };
  throw new BridgeError(`${at} is required (${describe(ty)})`);
}

/** Converts JSON to the jco value of WIT type `ty`; `at` names the place for error messages. */
export function fromJson(value, ty, at) {
  const wrong = () => new BridgeError(`${at} must be ${describe(ty)}`);
  if (isOption(ty)) {
    if (value === null) {
      return isOption(ty.option) ? some(ty, fromJson(null, ty.option, at)) : none(ty);
    }
    return some(ty, fromJson(value, ty.option, at));
  }
  if (isJsonText(ty)) {
    if (!isObject(value)) throw wrong();
    return { json: canonicalJson(value) };
  }
  if (ty === 'bool') {
    if (typeof value !== 'boolean') throw wrong();
    return value;
  }
  if (ty in INTEGERS) {
    if (typeof value !== 'number' || !Number.isInteger(value)) throw wrong();
    const n = BigInt(value);
    const [lo, hi] = INTEGERS[ty];
    if (n < lo || n > hi) throw new BridgeError(`${at} is out of range for its type`);
    return ty === 's64' || ty === 'u64' ? n : value;
  }
  if (ty === 'f32' || ty === 'f64') {
    if (typeof value !== 'number') throw wrong();
    return value;
  }
  if (ty === 'string') {
    if (typeof value !== 'string') throw wrong();
    return value;
  }
  if (ty === 'char') {
    if (typeof value !== 'string' || [...value].length !== 1) {
      throw new BridgeError(`${at} must be a single character`);
    }
    return value;
  }
  if (ty.enum) {
    if (!ty.enum.includes(value)) throw wrong();
    return value;
  }
  if (ty.list) {
    if (!Array.isArray(value)) throw wrong();
    const items = value.map((item, i) => fromJson(item, ty.list, `${at}[${i}]`));
    return ty.list === 'u8' ? Uint8Array.from(items) : items;
  }
  if (ty.record) {
    if (!isObject(value)) throw wrong();
    const known = ty.record.map((f) => camelCase(f.name));
    const unknown = Object.keys(value).find((k) => !known.includes(k));
    if (unknown !== undefined) {
      throw new BridgeError(
        `${join(at, unknown)} is not a known field; expected: ${known.join(', ')}`,
      );
    }
    const out = {};
    for (const field of ty.record) {
      const key = camelCase(field.name);
      const place = join(at, key);
      out[key] = key in value ? fromJson(value[key], field.type, place) : absent(field.type, place);
    }
    return out;
  }
  if (ty.tuple) {
    if (!Array.isArray(value)) throw wrong();
    if (value.length !== ty.tuple.length) {
      throw new BridgeError(`${at} must be an array of ${ty.tuple.length} items`);
    }
    return value.map((item, i) => fromJson(item, ty.tuple[i], `${at}[${i}]`));
  }
  if (ty.variant) {
    let name;
    let payload;
    if (typeof value === 'string') {
      name = value;
    } else if (isObject(value) && Object.keys(value).length === 1) {
      [[name, payload]] = Object.entries(value);
    } else {
      throw new BridgeError(`${at} must be a case name or {"case": value}`);
    }
    const kase = ty.variant.find((c) => c.name === name);
    if (!kase) throw new BridgeError(`${at} must be one of ${ty.variant.map((c) => c.name).join(', ')}`);
    if (kase.type !== undefined && payload === undefined) {
      throw new BridgeError(`${at}.${name} needs a value`);
    }
    if (kase.type === undefined && payload !== undefined) {
      throw new BridgeError(`${at}.${name} takes no value`);
    }
    return kase.type === undefined
      ? { tag: name }
      : { tag: name, val: fromJson(payload, kase.type, `${at}.${name}`) };
  }
  if (ty.flags) {
    if (!Array.isArray(value)) throw wrong();
    const out = Object.fromEntries(ty.flags.map((f) => [camelCase(f), false]));
    for (const item of value) {
      if (!ty.flags.includes(item)) {
        throw new BridgeError(`${at} entries must be among ${ty.flags.join(', ')}`);
      }
      out[camelCase(item)] = true;
    }
    return out;
  }
  throw new BridgeError(`${at} has a type the JSON bridge cannot carry`);
}

function isNone(ty, value) {
  return isOption(ty.option) ? value?.tag === 'none' : value === undefined || value === null;
}

/** Converts a jco value of WIT type `ty` to JSON; option `none` fields of records are left out. */
export function toJson(value, ty) {
  if (ty in INTEGERS) return Number(value);
  if (typeof ty === 'string') return value;
  if (isOption(ty)) {
    if (isNone(ty, value)) return null;
    return toJson(isOption(ty.option) ? value.val : value, ty.option);
  }
  if (isJsonText(ty)) {
    try {
      return JSON.parse(value.json);
    } catch {
      return {};
    }
  }
  if (ty.enum) return value;
  if (ty.list) return Array.from(value, (item) => toJson(item, ty.list));
  if (ty.tuple) return value.map((item, i) => toJson(item, ty.tuple[i]));
  if (ty.record) {
    const out = {};
    for (const field of ty.record) {
      const key = camelCase(field.name);
      if (isOption(field.type) && isNone(field.type, value[key])) continue;
      out[key] = toJson(value[key], field.type);
    }
    return out;
  }
  if (ty.variant) {
    const kase = ty.variant.find((c) => c.name === value.tag);
    if (kase?.type === undefined) return value.tag;
    return { [camelCase(value.tag)]: toJson(value.val, kase.type) };
  }
  if (ty.flags) return ty.flags.filter((f) => value[camelCase(f)]);
  if (ty.result) return value === undefined ? null : toJson(value, ty.result.ok);
  return null;
}

/** The HTTP status of each `relay-error` case (as the Rust host's `bridge::status_of`). */
export function statusOf(kase) {
  return (
    {
      invalid: 400,
      unauthorized: 401,
      forbidden: 403,
      'not-found': 404,
      conflict: 409,
      'stale-session': 409,
      cancelled: 409,
      'too-large': 413,
      unavailable: 503,
      'storage-full': 507,
    }[kase] ?? 500
  );
}

/** Builds an export's argument list from JSON keyed by camelCase parameter names. */
export function argumentsOf(signature, caller, named) {
  const known = signature.params.filter((p) => p.name !== 'caller').map((p) => camelCase(p.name));
  const unknown = Object.keys(named).find((k) => !known.includes(k));
  if (unknown !== undefined) {
    throw new BridgeError(
      `${signature.name} takes no argument ${unknown}; its arguments: ${known.join(', ')}`,
    );
  }
  return signature.params.map(({ name, type }) => {
    const key = camelCase(name);
    if (name === 'caller') return caller;
    if (key in named) return fromJson(named[key], type, key);
    if (name === 'query') return fromJson({}, type, '');
    if (name === 'input') {
      try {
        return fromJson({}, type, '');
      } catch (e) {
        throw new BridgeError(`a JSON body is required: ${e.message}`);
      }
    }
    return absent(type, key);
  });
}

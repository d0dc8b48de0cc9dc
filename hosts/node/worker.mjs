// A call worker: runs the relay component's calls for a Relay on the calling thread (relay.mjs),
// so that a call can be stopped. The calling thread blocks in Atomics.wait while a call runs; every
// store call (and every request for randomness) comes back to it through `port` as a request it
// answers, so the store, its one SQLite connection and the call's transaction stay on the calling
// thread: terminating this worker past the deadline leaves nothing half-done here, and the calling
// thread rolls the transaction back. Signals: flags[0] (worker -> caller: a message is waiting),
// flags[1] (caller -> worker: the answer is waiting).

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { receiveMessageOnPort, workerData } from 'node:worker_threads';

import { Clock, guestImports, noJspi } from './relay.mjs';

const { port, signal, build, memoryLimitBytes } = workerData;
const flags = new Int32Array(signal);

function tell(message) {
  port.postMessage(message);
  Atomics.store(flags, 0, 1);
  Atomics.notify(flags, 0);
}

/** A request to the calling thread, answered synchronously. */
function ask(message) {
  tell(message);
  Atomics.wait(flags, 1, 0);
  Atomics.store(flags, 1, 0);
  return receiveMessageOnPort(port).message.value;
}

const STORE_FUNCTIONS = ['execute', 'query', 'queryPage', 'lockRowsInstead', 'getSetting', 'setSetting', 'listSettings'];
const storeCapability = Object.fromEntries(
  STORE_FUNCTIONS.map((fn) => [fn, (...args) => ask({ kind: 'store', fn, args })]),
);
storeCapability.dialect = () => 'sqlite';
// Wake keys (docs/design.md, "Wake keys"): this host holds no waiting requests.
storeCapability.concerns = () => undefined;
storeCapability.dueAt = () => undefined;
// The caller's clock as it stood when the call began (it does not move during a call).
const clock = new Clock(0);
const random = { fill: (bytes) => bytes.set(ask({ kind: 'random', len: bytes.length })) };
const imports = guestImports(storeCapability, clock, random);

/** `bytes` (a core module) with every memory it defines capped at `maxBytes` (its `max` limit). */
export function capMemory(bytes, maxBytes) {
  const maxPages = Math.max(1, Math.floor(maxBytes / 65536));
  const leb = (n) => {
    const out = [];
    do {
      let b = n & 0x7f;
      n >>>= 7;
      if (n) b |= 0x80;
      out.push(b);
    } while (n);
    return out;
  };
  const readLeb = (at) => {
    let n = 0, shift = 0, b;
    do {
      b = bytes[at++];
      n += (b & 0x7f) * 2 ** shift;
      shift += 7;
    } while (b & 0x80);
    return [n, at];
  };
  const parts = [bytes.subarray(0, 8)];
  let at = 8;
  while (at < bytes.length) {
    const id = bytes[at];
    const [size, start] = readLeb(at + 1);
    const end = start + size;
    if (id !== 5) {
      parts.push(bytes.subarray(at, end));
      at = end;
      continue;
    }
    let [count, p] = readLeb(start);
    const body = [...leb(count)];
    for (let i = 0; i < count; i++) {
      const flag = bytes[p++];
      if (flag !== 0 && flag !== 1) throw new Error(`memory limits of kind ${flag} are not capped`);
      let min, max;
      [min, p] = readLeb(p);
      if (flag === 1) [max, p] = readLeb(p);
      const capped = Math.max(min, Math.min(max ?? maxPages, maxPages));
      body.push(1, ...leb(min), ...leb(capped));
    }
    parts.push(Uint8Array.of(5, ...leb(body.length), ...body));
    at = end;
  }
  return Buffer.concat(parts);
}

const modules = new Map();
const getCoreModule = (name) => {
  if (!modules.has(name)) {
    modules.set(name, new WebAssembly.Module(capMemory(readFileSync(join(build, 'jco', name)), memoryLimitBytes)));
  }
  return modules.get(name);
};
const { instantiate } = await import(join(build, 'jco', 'relay.js'));

function run({ iface, name, values, startMs, offsetMs }) {
  clock.startMs = startMs;
  clock.offsetMs = offsetMs;
  const hadJspi = typeof WebAssembly.promising === 'function';
  if (!hadJspi) WebAssembly.promising = noJspi;
  try {
    const root = instantiate(getCoreModule, imports);
    const exports = root[iface.camel] ?? root[iface.raw];
    return { ok: exports[name](...values) };
  } catch (error) {
    if (error && Object.hasOwn(error, 'payload')) return { err: error.payload };
    const text = `${error?.stack ?? error}`;
    const memory = /alloc_error|memory allocation|out of memory/i.test(text);
    return { trap: error?.message ?? String(error), memory };
  } finally {
    if (!hadJspi) delete WebAssembly.promising;
  }
}

port.on('message', (message) => {
  if (message.kind === 'call') tell({ kind: 'done', outcome: run(message) });
});
tell({ kind: 'ready' });

// The relay component in Node.js: the same .wasm the Rust host embeds (`agent-relay component`),
// transpiled by jco (`node transpile.mjs`), given the store capability over better-sqlite3, a
// substitutable wall clock and randomness. Nothing else of the world reaches it: no environment,
// no files, no network.
//
//   const relay = await Relay.load('relay.db');
//   const { token } = relay.callJson('register-agent', { input: { id: 'alice' } });
//   relay.callJson('poll-inbox', { agentId: 'alice', query: {} }, { bearer: token });
//
// Each call instantiates the component afresh (the core modules are compiled once) inside one
// transaction: committed when the export returns ok, rolled back on its error, on a trap or when a
// limit stops it. By default (`limits: true`) calls run in a worker thread (worker.mjs) that is
// terminated past the time limit, with the guest's memory capped; the store stays in this thread.

import { randomFillSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MessageChannel, Worker, receiveMessageOnPort } from 'node:worker_threads';

import { cli, io, random as wasiRandom } from '@bytecodealliance/preview2-shim';

import { BridgeError, argumentsOf, camelCase, statusOf, toJson } from './bridge.mjs';
import { SqliteStore } from './store.mjs';

const here = dirname(fileURLToPath(import.meta.url));
export const BUILD = join(here, 'build');
/** The limits of a call, as the Rust host's defaults: 5 s of time, 64 MiB of guest memory. */
export const DEFAULT_TIME_LIMIT_MS = 5000;
export const DEFAULT_MEMORY_LIMIT_BYTES = 64 * 1024 * 1024;
/** How long a new call worker may take to load the component before the call fails. */
const WORKER_START_MS = 30_000;

/** The relay's clock: the system clock (or a fixed start) plus an offset that can be moved. */
export class Clock {
  constructor(startMs = null) {
    this.startMs = startMs;
    this.offsetMs = 0;
  }

  static fixed(startMs) {
    return new Clock(startMs);
  }

  advance(ms) {
    this.offsetMs += ms;
  }

  nowMs() {
    return (this.startMs ?? Date.now()) + this.offsetMs;
  }

  /** The `wasi:clocks/wall-clock` interface. */
  wallClock() {
    return {
      now: () => {
        const ms = BigInt(this.nowMs());
        return { seconds: ms / 1000n, nanoseconds: Number(ms % 1000n) * 1_000_000 };
      },
      resolution: () => ({ seconds: 0n, nanoseconds: 1_000_000 }),
    };
  }
}

/** Randomness from the operating system (`fill(bytes)` may be replaced, e.g. for replay). */
export const systemRandom = { fill: (bytes) => randomFillSync(bytes) };

function wasiRandomOf(source) {
  return {
    getRandomBytes: (len) => {
      const bytes = new Uint8Array(Number(len));
      source.fill(bytes);
      return bytes;
    },
    getRandomU64: () => {
      const bytes = new Uint8Array(8);
      source.fill(bytes);
      return new DataView(bytes.buffer).getBigUint64(0, true);
    },
  };
}

/** An error as the caller receives it: `{"error": {"code", "message"}}` with an HTTP status. */
export class ErrorReply extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }

  toJson() {
    return { error: { code: this.code, message: this.message } };
  }
}

// Thrown as is, made once: no stack is captured per probe.
const NO_JSPI = new Error('no JSPI in this Node.js');

export function noJspi() {
  throw NO_JSPI;
}

const CALLERS = {
  operator: { tag: 'operator' },
  anonymous: { tag: 'anonymous' },
};

/** `'operator'`, `'anonymous'` or `{bearer: TOKEN}` as the WIT `caller` value. */
function callerValue(caller) {
  if (typeof caller === 'string' && CALLERS[caller]) return CALLERS[caller];
  if (caller && typeof caller.bearer === 'string') return { tag: 'bearer', val: caller.bearer };
  throw new ErrorReply(400, 'invalid', `unknown caller ${JSON.stringify(caller)}`);
}

/**
 * What the guest is given: the store capability, the wall clock, randomness and the inert rest of
 * WASI. The same in the calling thread and in a call worker (worker.mjs).
 */
export function guestImports(storeCapability, clock, random) {
  return {
    'agent-relay:relay/store': storeCapability,
    // The guest gets no environment, arguments or working directory, as in the Rust host.
    'wasi:cli/environment': {
      getEnvironment: () => [],
      getArguments: () => [],
      initialCwd: () => undefined,
    },
    // A component never ends the host's process.
    'wasi:cli/exit': {
      exit: () => { throw new Error('the relay component called exit'); },
      exitWithCode: () => { throw new Error('the relay component called exit'); },
    },
    'wasi:cli/stderr': cli.stderr,
    'wasi:cli/stdin': cli.stdin,
    'wasi:cli/stdout': cli.stdout,
    'wasi:cli/terminal-input': cli.terminalInput,
    'wasi:cli/terminal-output': cli.terminalOutput,
    'wasi:cli/terminal-stderr': cli.terminalStderr,
    'wasi:cli/terminal-stdin': cli.terminalStdin,
    'wasi:cli/terminal-stdout': cli.terminalStdout,
    'wasi:clocks/monotonic-clock': {
      now: () => BigInt(Math.round(performance.now() * 1e6)),
      resolution: () => 1000n,
      subscribeDuration: () => { throw new Error('the relay does not wait'); },
      subscribeInstant: () => { throw new Error('the relay does not wait'); },
    },
    'wasi:clocks/wall-clock': clock.wallClock(),
    'wasi:io/error': io.error,
    'wasi:io/poll': io.poll,
    'wasi:io/streams': io.streams,
    'wasi:random/insecure-seed': wasiRandom.insecureSeed,
    'wasi:random/random': wasiRandomOf(random),
  };
}

export class Relay {
  constructor(path, {
    clock = new Clock(), random = systemRandom, settings = {}, synchronous, build = BUILD,
    limits = true, timeLimitMs = DEFAULT_TIME_LIMIT_MS, memoryLimitBytes = DEFAULT_MEMORY_LIMIT_BYTES,
  } = {}) {
    this.clock = clock;
    this.random = random;
    this.build = build;
    // With `limits` (the default) calls run in a worker thread that is terminated past the time
    // limit; without, in this thread, unstoppable (a guest that loops hangs the process).
    this.limits = limits;
    this.timeLimitMs = timeLimitMs;
    this.memoryLimitBytes = memoryLimitBytes;
    this.worker = null;
    // Settings for this relay's life only, never written (as `--setting` in the Rust host).
    this.store = new SqliteStore(path, { synchronous, runSettings: settings });
    const signatures = JSON.parse(readFileSync(join(build, 'signatures.json'), 'utf8'));
    this.signatures = new Map(signatures.exports.map((s) => [s.name, s]));
    const modules = new Map();
    this.getCoreModule = (name) => {
      if (!modules.has(name)) {
        modules.set(name, new WebAssembly.Module(readFileSync(join(build, 'jco', name))));
      }
      return modules.get(name);
    };
    this.imports = guestImports(this.store.capability(), clock, random);
  }

  /** Every export's signature (name, interface, access, params, result), by name. */
  exports() {
    return [...this.signatures.values()];
  }

  close() {
    this.stopWorker();
    this.store.close();
  }

  /**
   * Calls `name` as `caller` with JSON arguments keyed by camelCase parameter names (without
   * `caller`), and returns the answer as JSON. Throws an ErrorReply: the relay's own error,
   * `invalid` for arguments that do not fit, `internal` for a trap, `unavailable` when the store
   * refuses the transaction. Nothing is written in each case.
   */
  callJson(name, args = {}, caller = 'operator') {
    const signature = this.signatures.get(name);
    if (!signature) throw new ErrorReply(404, 'not_found', `the relay component has no export ${name}`);
    let values;
    try {
      values = argumentsOf(signature, callerValue(caller), args ?? {});
    } catch (error) {
      if (error instanceof BridgeError) throw new ErrorReply(400, 'invalid', error.message);
      throw error;
    }
    const { ok, err } = this.call(signature, values);
    if (err) {
      throw new ErrorReply(statusOf(err.tag), err.tag.replaceAll('-', '_'), String(err.val ?? err.tag));
    }
    const result = signature.result;
    if (result?.result) return result.result.ok ? toJson(ok, result.result.ok) : null;
    // An export that cannot fail (`input-rules`) answers its value as it is.
    return result ? toJson(ok, result) : null;
  }

  /** One call: a fresh instance inside one transaction. Returns {ok} or {err: relay-error}. */
  call(signature, values) {
    try {
      this.store.begin(signature.access);
    } catch (error) {
      const kind = error.kind === 'full' ? ['storage_full', 507] : ['unavailable', 503];
      throw new ErrorReply(kind[1], kind[0], `the database refused the call: ${error.message}`);
    }
    let outcome;
    if (this.limits) {
      outcome = this.callInWorker(signature, values);
      if (outcome.stopped || outcome.trap !== undefined) {
        this.store.finish(false);
        const why = outcome.stopped === 'time' ? `it ran past the time limit (${this.timeLimitMs} ms)`
          : outcome.memory ? `it needed more than the memory limit (${this.memoryLimitBytes} bytes): ${outcome.trap}`
            : outcome.trap;
        const error = new ErrorReply(500, 'internal', `${signature.name} ${outcome.stopped || outcome.memory ? 'was stopped' : 'failed inside the relay component'}: ${why}`);
        error.limit = outcome.stopped ?? (outcome.memory ? 'memory' : undefined);
        throw error;
      }
    } else {
      try {
        const root = this.instantiate();
        const iface = root[camelCase(signature.interface)] ?? root[signature.interface];
        const fn = iface[camelCase(signature.name)];
        outcome = { ok: fn(...values) };
      } catch (error) {
        if (error && Object.hasOwn(error, 'payload')) {
          outcome = { err: error.payload };
        } else {
          this.store.finish(false);
          throw new ErrorReply(
            500,
            'internal',
            `${signature.name} failed inside the relay component: ${error?.message ?? error}`,
          );
        }
      }
    }
    try {
      this.store.finish(outcome.err === undefined);
    } catch (error) {
      throw new ErrorReply(503, 'unavailable', `the database failed: ${error.message}`);
    }
    return outcome;
  }

  /** A worker ready for calls: the one running, or a new one (waited for, synchronously). */
  startWorker() {
    if (this.worker) return this.worker;
    const { port1, port2 } = new MessageChannel();
    const signal = new SharedArrayBuffer(8);
    const flags = new Int32Array(signal);
    const thread = new Worker(new URL('./worker.mjs', import.meta.url), {
      workerData: { port: port2, signal, build: this.build, memoryLimitBytes: this.memoryLimitBytes },
      transferList: [port2],
      // The worker's own JavaScript heap (the guest's memory is capped in the module itself).
      resourceLimits: { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 16 },
      stdout: false,
      stderr: false,
    });
    thread.unref();
    const worker = { thread, port: port1, flags };
    // A worker that dies on its own (its heap limit) between calls is replaced at the next call;
    // one that dies during a call is noticed at the deadline (the calling thread is waiting).
    thread.on('error', () => {});
    thread.on('exit', () => {
      if (this.worker === worker) this.worker = null;
    });
    const ready = this.waitFor(worker, performance.now() + WORKER_START_MS);
    if (ready?.kind !== 'ready') {
      thread.terminate();
      throw new ErrorReply(503, 'unavailable', 'the call worker did not start');
    }
    this.worker = worker;
    return worker;
  }

  stopWorker() {
    if (!this.worker) return;
    this.worker.thread.terminate();
    this.worker.port.close();
    this.worker = null;
  }

  /** The worker's next message (answering store and randomness requests meanwhile), or null past `deadline`. */
  waitFor(worker, deadline) {
    const { port, flags } = worker;
    for (;;) {
      const received = receiveMessageOnPort(port);
      if (received) {
        const message = received.message;
        if (message.kind === 'store') {
          this.answer(worker, this.capability[message.fn](...message.args));
          continue;
        }
        if (message.kind === 'random') {
          const bytes = new Uint8Array(message.len);
          this.random.fill(bytes);
          this.answer(worker, bytes);
          continue;
        }
        return message;
      }
      const left = deadline - performance.now();
      if (left <= 0) return null;
      Atomics.wait(flags, 0, 0, left);
      Atomics.store(flags, 0, 0);
    }
  }

  answer({ port, flags }, value) {
    port.postMessage({ value });
    Atomics.store(flags, 1, 1);
    Atomics.notify(flags, 1);
  }

  /** One call in the worker: {ok}, {err}, {trap, memory} or {stopped: 'time'} (the worker terminated). */
  callInWorker(signature, values) {
    const worker = this.startWorker();
    this.capability ??= this.imports['agent-relay:relay/store'];
    const deadline = performance.now() + this.timeLimitMs;
    worker.port.postMessage({
      kind: 'call',
      iface: { camel: camelCase(signature.interface), raw: signature.interface },
      name: camelCase(signature.name),
      values,
      startMs: this.clock.startMs ?? Date.now(),
      offsetMs: this.clock.offsetMs,
    });
    const done = this.waitFor(worker, deadline);
    if (!done) {
      this.stopWorker();
      return { stopped: 'time' };
    }
    return done.outcome;
  }

  instantiate() {
    // jco's bindings probe for JSPI with `WebAssembly.promising(f)` once per export at every
    // instantiation and fall back to `f` when it throws. On Node 20 it does not exist, and the
    // TypeError for calling undefined makes V8 re-parse the whole (600 KB) bindings function to
    // word its message: 150 ms a call. A stand-in that throws plainly costs nothing.
    if (typeof WebAssembly.promising === 'function') {
      return this.instantiateComponent(this.getCoreModule, this.imports);
    }
    WebAssembly.promising = noJspi;
    try {
      return this.instantiateComponent(this.getCoreModule, this.imports);
    } finally {
      delete WebAssembly.promising;
    }
  }

  /**
   * Opens (creating if needed) the database at `path`, loads the transpiled component and brings
   * the schema up to date. Options: `clock` (a Clock), `random` ({fill(bytes)}), `settings`
   * ({key: value}, for this relay's life only: never written), `synchronous` ('FULL' by
   * default), `build` (the transpiled component's folder).
   */
  static async load(path, options = {}) {
    const build = options.build ?? BUILD;
    const { instantiate } = await import(join(build, 'jco', 'relay.js'));
    const relay = new Relay(path, options);
    relay.instantiateComponent = instantiate;
    relay.schema = relay.callJson('migrate', {});
    return relay;
  }
}

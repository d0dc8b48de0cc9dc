// Conformance on the Node host: runs the behaviour cases in tests/conformance/*.json (the same files
// the Rust runner tests/all/conformance.rs reads; the format is described there) and, with
// `--compare DIR`, checks every answer against the Rust host's transcript in DIR. A failing case,
// or an answer that differs from the Rust host's, fails the run.
//
//   node conformance.mjs [--cases DIR] [--compare DIR] [--bench N [--synchronous full|normal|off]]

import { mkdtempSync, readFileSync, readdirSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';

import { Clock, ErrorReply, Relay } from './relay.mjs';

/** The instant both hosts' clocks start at: 2026-01-01T00:00:00Z. */
const START_MS = 1_767_225_600_000;

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const casesDir = option('--cases', join(here, '..', '..', 'tests', 'conformance'));
const compareDir = option('--compare', null);
const benchCalls = Number(option('--bench', 0));
const benchSynchronous = option('--synchronous', 'full');

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

class Memory {
  constructor() {
    this.values = new Map();
    this.tokens = new Map();
  }

  substitute(value) {
    if (typeof value === 'string') {
      const whole = /^\$\{([^}]+)\}$/.exec(value);
      if (whole && this.values.has(whole[1])) return this.values.get(whole[1]);
      let out = value;
      for (const [name, found] of this.values) {
        out = out.replaceAll(`\${${name}}`, typeof found === 'string' ? found : JSON.stringify(found));
      }
      return out;
    }
    if (Array.isArray(value)) return value.map((v) => this.substitute(v));
    if (isObject(value)) {
      return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, this.substitute(v)]));
    }
    return value;
  }

  caller(spec) {
    if (spec === undefined || spec === 'operator') return 'operator';
    if (spec === 'anonymous') return 'anonymous';
    if (isObject(spec) && 'token of' in spec) {
      const token = this.tokens.get(spec['token of']);
      if (token === undefined) throw new Error(`no token was handed out for ${spec['token of']}`);
      return { bearer: token };
    }
    if (isObject(spec) && 'bearer' in spec) return { bearer: spec.bearer };
    throw new Error(`unknown caller ${JSON.stringify(spec)}`);
  }

  learn(step, answer) {
    if (typeof answer?.token === 'string' && typeof answer?.agent?.id === 'string') {
      this.tokens.set(answer.agent.id, answer.token);
    }
    for (const [name, pointer] of Object.entries(step.capture ?? {})) {
      const found = resolvePointer(answer, pointer);
      if (found === undefined) {
        throw new Error(`capture ${name}: nothing at ${pointer} in ${JSON.stringify(answer)}`);
      }
      this.values.set(name, found);
    }
  }
}

function resolvePointer(value, pointer) {
  if (pointer === '') return value;
  let at = value;
  for (const raw of pointer.split('/').slice(1)) {
    const key = raw.replaceAll('~1', '/').replaceAll('~0', '~');
    if (at === null || typeof at !== 'object' || !(key in at)) return undefined;
    at = at[key];
  }
  return at;
}

function typeOf(value) {
  if (value === undefined || value === null) return 'absent';
  if (Array.isArray(value)) return 'array';
  return typeof value;
}

/** Throws where `actual` lacks what `expected` names. */
function matches(expected, actual, at) {
  if (isObject(expected) && Array.isArray(expected.$oneOf)) {
    if (!expected.$oneOf.some((o) => isDeepStrictEqual(o, actual))) {
      throw new Error(`${at}: ${JSON.stringify(actual)} is none of ${JSON.stringify(expected.$oneOf)}`);
    }
    return;
  }
  if (isObject(expected) && typeof expected.$type === 'string') {
    if (typeOf(actual) !== expected.$type) {
      throw new Error(`${at}: expected a ${expected.$type}, got ${JSON.stringify(actual)}`);
    }
    return;
  }
  if (isObject(expected) && '$absent' in expected) {
    if (actual !== undefined && actual !== null) {
      throw new Error(`${at}: expected no value, got ${JSON.stringify(actual)}`);
    }
    return;
  }
  if (actual === undefined) throw new Error(`${at}: missing, expected ${JSON.stringify(expected)}`);
  if (isObject(expected) && isObject(actual)) {
    for (const [k, v] of Object.entries(expected)) matches(v, actual[k], `${at}/${k}`);
    return;
  }
  if (Array.isArray(expected) && Array.isArray(actual)) {
    if (expected.length !== actual.length) {
      throw new Error(`${at}: expected ${expected.length} items, got ${actual.length}: ${JSON.stringify(actual)}`);
    }
    expected.forEach((w, i) => matches(w, actual[i], `${at}/${i}`));
    return;
  }
  if (!isDeepStrictEqual(expected, actual)) {
    throw new Error(`${at}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
}

function redact(value) {
  if (Array.isArray(value)) return value.map(redact);
  if (isObject(value)) {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [k, k === 'token' && typeof v === 'string' ? '<token>' : redact(v)]),
    );
  }
  return value;
}

function callStep(relay, memory, step) {
  if (typeof step.call !== 'string') throw new Error('a step needs call');
  const caller = memory.caller(step.caller);
  const args = memory.substitute(step.args ?? {});
  try {
    return { ok: relay.callJson(step.call, args, caller) };
  } catch (error) {
    if (error instanceof ErrorReply) return { error };
    throw error;
  }
}

function answerJson(result) {
  if ('ok' in result) return { ok: redact(result.ok) };
  // How a trap is worded is the host's own; the relay's messages must match.
  if (result.error.code === 'internal') return { error: result.error.code };
  return { error: result.error.code, message: result.error.message };
}

function check(expect, result) {
  if (expect && 'error' in expect) {
    if ('ok' in result) throw new Error(`expected error ${expect.error}, got ok ${JSON.stringify(result.ok)}`);
    if (result.error.code !== expect.error) {
      throw new Error(`expected error ${expect.error}, got ${result.error.code}: ${result.error.message}`);
    }
    return;
  }
  if ('error' in result) throw new Error(`expected ok, got ${result.error.code}: ${result.error.message}`);
  if (expect && 'ok' in expect) matches(expect.ok, result.ok, '');
}

function raceOutcome(results) {
  const winners = results.filter((r) => 'ok' in r).length;
  const losers = results.filter((r) => 'error' in r).map((r) => r.error.code).sort();
  return { race: { winners, losers } };
}

function checkRace(expect, entry) {
  if (!expect) return;
  const { race } = entry;
  if ('winners' in expect && expect.winners !== race.winners) {
    throw new Error(`expected ${expect.winners} winner(s), got ${JSON.stringify(race)}`);
  }
  if ('othersError' in expect && race.losers.some((c) => c !== expect.othersError)) {
    throw new Error(`the losers must all get ${expect.othersError}: ${JSON.stringify(race)}`);
  }
}

/** Runs one case on a fresh database; returns its transcript or throws at the failing step. */
async function runCase(testCase, db) {
  const clock = Clock.fixed(START_MS);
  const relay = await Relay.load(db, { clock, settings: testCase.settings ?? {} });
  const memory = new Memory();
  const transcript = [];
  try {
    for (const [i, step] of testCase.steps.entries()) {
      try {
        if (typeof step.advanceMs === 'number') clock.advance(step.advanceMs);
        if (Array.isArray(step.race)) {
          // One thread: the racers run one after the other; the store serializes them either way.
          const entry = raceOutcome(step.race.map((racer) => callStep(relay, memory, racer)));
          checkRace(step.expect, entry);
          transcript.push(entry);
          continue;
        }
        if (step.call === undefined) continue;
        const result = callStep(relay, memory, step);
        check(step.expect === undefined ? undefined : memory.substitute(step.expect), result);
        if ('ok' in result) memory.learn(step, result.ok);
        const answer = step.dependsOnRace ? 'depends on which racer won' : answerJson(result);
        transcript.push({ step: i, call: step.call, answer });
      } catch (error) {
        throw new Error(`step ${i} (${step.call ?? 'race'}): ${error.message}`);
      }
    }
  } finally {
    relay.close();
  }
  return transcript;
}

function firstDifference(ours, theirs, at = '') {
  if (isDeepStrictEqual(ours, theirs)) return null;
  if (isObject(ours) && isObject(theirs)) {
    for (const k of new Set([...Object.keys(ours), ...Object.keys(theirs)])) {
      const d = firstDifference(ours[k], theirs[k], `${at}/${k}`);
      if (d) return d;
    }
  }
  if (Array.isArray(ours) && Array.isArray(theirs) && ours.length === theirs.length) {
    for (let i = 0; i < ours.length; i++) {
      const d = firstDifference(ours[i], theirs[i], `${at}/${i}`);
      if (d) return d;
    }
  }
  return `${at || '/'}: node ${JSON.stringify(ours)} but rust ${JSON.stringify(theirs)}`;
}

async function bench(n) {
  const dir = mkdtempSync(join(tmpdir(), 'relay-bench-'));
  try {
    const relay = await Relay.load(join(dir, 'bench.db'), { synchronous: benchSynchronous.toUpperCase() });
    relay.callJson('register-agent', { input: { id: 'alice' } });
    const send = (i) =>
      relay.callJson('send-message', { input: { from: 'user', to: 'alice', body: `message ${i}` } });
    for (let i = 0; i < Math.min(n, 50); i++) send(i);
    const started = process.hrtime.bigint();
    for (let i = 0; i < n; i++) send(i);
    const perCall = Number(process.hrtime.bigint() - started) / 1000 / n;
    console.log(`node host: send-message ${perCall.toFixed(0)} µs per call over ${n} calls (synchronous=${benchSynchronous})`);
    relay.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main() {
  if (benchCalls > 0) {
    await bench(benchCalls);
    return;
  }
  const files = readdirSync(casesDir).filter((f) => f.endsWith('.json')).sort();
  if (files.length === 0) throw new Error(`no cases in ${casesDir}`);
  const failures = [];
  for (const file of files) {
    const stem = basename(file, '.json');
    const testCase = JSON.parse(readFileSync(join(casesDir, file), 'utf8'));
    const dir = mkdtempSync(join(tmpdir(), 'relay-conformance-'));
    try {
      const transcript = await runCase(testCase, join(dir, 'relay.db'));
      if (compareDir) {
        const theirs = join(compareDir, `${stem}.json`);
        if (!existsSync(theirs)) throw new Error(`the Rust host left no transcript at ${theirs}`);
        const difference = firstDifference(transcript, JSON.parse(readFileSync(theirs, 'utf8')));
        if (difference) throw new Error(`answers differ from the Rust host's at ${difference}`);
      }
      console.log(`ok   ${stem}${compareDir ? ' (same answers as the Rust host)' : ''}`);
    } catch (error) {
      console.log(`FAIL ${stem}: ${error.message}`);
      failures.push(stem);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  if (failures.length > 0) {
    console.error(`conformance cases failed on the Node host: ${failures.join(', ')}`);
    process.exit(1);
  }
  console.log(`${files.length} conformance cases pass on the Node host`);
}

await main();

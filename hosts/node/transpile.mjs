// Transpiles the relay component for Node: `node transpile.mjs [build/relay.wasm]`.
// The component and its signatures come from the Rust binary, so both hosts run the same bytes:
//   agent-relay component --out build/relay.wasm
//   agent-relay component --signatures --out build/signatures.json

import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const component = process.argv[2] ?? join(here, 'build', 'relay.wasm');
if (!existsSync(component)) {
  console.error(`${component} is missing; write it with: agent-relay component --out ${component}`);
  process.exit(1);
}
const jco = join(here, 'node_modules', '.bin', 'jco');
execFileSync(
  jco,
  ['transpile', component, '-o', join(here, 'build', 'jco'), '--name', 'relay',
    '--instantiation', 'sync', '--no-typescript', '--quiet'],
  { stdio: 'inherit' },
);
console.log(`transpiled ${component} into build/jco/`);

// The relay component hosted in Node.js: `node example.mjs [DB_PATH]` (after `node transpile.mjs`).

import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { ErrorReply, Relay } from './relay.mjs';

const db = process.argv[2] ?? join(mkdtempSync(join(tmpdir(), 'relay-example-')), 'relay.db');
const relay = await Relay.load(db);

const alice = relay.callJson('register-agent', { input: { id: 'alice', label: 'backend' } });
const bob = relay.callJson('register-agent', { input: { id: 'bob', label: 'backend' } });
const sent = relay.callJson('send-message', {
  input: { from: 'user', to: 'label:backend', body: 'fix the flaky test', claimable: true },
});
console.log(`sent message ${sent.message.id} to ${sent.recipients.join(', ')}`);

const messageId = sent.message.id;
const claimed = relay.callJson(
  'claim-message',
  { messageId, input: { agentId: 'alice' } },
  { bearer: alice.token },
);
console.log(`claimed by ${claimed.claimedBy} until ${new Date(claimed.claimExpiresAt).toISOString()}`);
try {
  relay.callJson('claim-message', { messageId, input: { agentId: 'bob' } }, { bearer: bob.token });
  throw new Error('a second claimer must not win');
} catch (error) {
  if (!(error instanceof ErrorReply)) throw error;
  console.log(`bob: ${error.code} (${error.message})`);
}
relay.close();

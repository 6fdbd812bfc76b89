// Runs every `js example` block of docs/client.md against the real server (with the simulator, whose demo
// user has orders, a portfolio and alerts), so that the documented examples stay true.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { root, startServer, token } from './harness.mjs';

const run = promisify(execFile);
const doc = readFileSync(path.join(root, 'docs/client.md'), 'utf8');
const examples = [...doc.matchAll(/```js example\n([\s\S]*?)```/g)].map((m) => m[1]);
const client = pathToFileURL(path.join(root, 'net/web/client.js')).href;
const ws = pathToFileURL(path.join(root, 'net/tests/clients/node_modules/ws/wrapper.mjs')).href;

test('docs/client.md has examples', () => {
  assert.ok(examples.length >= 3, `${examples.length} examples`);
});

test('every example of docs/client.md runs against the server and ends by itself', async () => {
  const server = await startServer(['--shards', '2', '--simulator-symbols', '10', '--simulator-rate', '200']);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tickwire-client-docs-'));
  try {
    for (const [i, source] of examples.entries()) {
      const code = source
        .replaceAll("'./client.js'", `'${client}'`)
        .replaceAll("from 'ws'", `from '${ws}'`)
        .replaceAll('ws://127.0.0.1:8080', `ws://${server.addr}`)
        .replaceAll("'<user token>'", JSON.stringify(token('demo-user')));
      const file = path.join(dir, `example-${i + 1}.mjs`);
      writeFileSync(file, code);
      const { stdout } = await run(process.execPath, [file], { timeout: 30000 });
      assert.ok(stdout.trim().length > 0, `example ${i + 1} printed nothing`);
      console.log(`example ${i + 1}:\n${stdout}`);
    }
  } finally {
    await server.stop();
  }
});

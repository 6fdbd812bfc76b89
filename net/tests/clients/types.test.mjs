// The client's TypeScript declarations (net/web/client.d.ts) compile under tsc --strict and catch the
// mistakes types-check.ts makes on purpose.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

test('client.d.ts types what the docs do and refuses mistakes', () => {
  const tsc = path.join(here, 'node_modules/typescript/bin/tsc');
  const args = [tsc, '--noEmit', '--strict', '--target', 'es2022', '--module', 'nodenext', '--moduleResolution', 'nodenext',
    path.join(here, 'types-check.ts')];
  let out = '';
  try {
    out = execFileSync(process.execPath, args, { encoding: 'utf8' });
  } catch (e) {
    out = `${e.stdout}${e.stderr}`;
    assert.fail(`tsc found errors:\n${out}`);
  }
  assert.equal(out.trim(), '');
});

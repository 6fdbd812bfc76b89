// Validates AsyncAPI documents with the official parser: node validate.mjs FILE...
// Exits 1 when a document has an error-level diagnostic (warnings are printed, not fatal).
import { readFile } from 'node:fs/promises';
import { Parser, DiagnosticSeverity } from '@asyncapi/parser';

const parser = new Parser();
let failed = false;
for (const file of process.argv.slice(2)) {
  const { document, diagnostics } = await parser.parse(await readFile(file, 'utf8'));
  const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
  for (const d of diagnostics) {
    const level = d.severity === DiagnosticSeverity.Error ? 'error' : 'warning';
    console.log(`${file}: ${level}: ${d.message} at ${d.path.join('.')}`);
  }
  if (!document || errors.length > 0) {
    failed = true;
    console.log(`${file}: INVALID (${errors.length} errors)`);
  } else {
    console.log(`${file}: valid AsyncAPI ${document.version()}, ${document.operations().length} operations, ${document.messages().length} messages`);
  }
}
process.exit(failed ? 1 : 0);

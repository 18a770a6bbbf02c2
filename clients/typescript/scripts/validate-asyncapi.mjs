// Validates api/asyncapi.json with the AsyncAPI parser (the reference implementation of the
// specification's rules): exits 1 on any error-level diagnostic.
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { Parser, DiagnosticSeverity } from '@asyncapi/parser';

const path = fileURLToPath(new URL('../../../api/asyncapi.json', import.meta.url));
const text = await readFile(path, 'utf8');
const { document, diagnostics } = await new Parser().parse(text, { source: path });
const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
for (const d of diagnostics) {
  const level = ['error', 'warning', 'info', 'hint'][d.severity] ?? d.severity;
  console.log(`${level}: ${d.code} at ${d.path.join('.')}: ${d.message}`);
}
if (errors.length > 0 || !document) {
  console.error(`api/asyncapi.json: ${errors.length} error(s)`);
  process.exit(1);
}
console.log(
  `api/asyncapi.json: valid AsyncAPI ${document.version()}, ${document.channels().length} channels, ` +
    `${document.allMessages().length} messages`,
);

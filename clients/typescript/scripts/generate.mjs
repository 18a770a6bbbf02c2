// Generates the TypeScript types of the two contracts, committed under src/generated/:
// - openapi.ts from api/openapi.json (openapi-typescript): `paths` and `components`;
// - messages.ts from api/asyncapi.json's schemas (json-schema-to-typescript): every event
//   envelope and payload, command and WebSocket frame.
// - api/console/client/*.js: the client compiled (tsc), which the api embeds for its console.
// `--check` writes nothing and exits 1 when a committed file differs from what it would write
// (CI runs it, so a contract change without regenerated types fails).
import { readFile, writeFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import openapiTS, { astToString } from 'openapi-typescript';
import { compile } from 'json-schema-to-typescript';

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const check = process.argv.includes('--check');
const banner = (source) =>
  `// Generated from ${source} by \`npm run generate\` (clients/typescript/scripts/generate.mjs).\n` +
  '// Do not edit: change the document and regenerate.\n';

async function openapiTypes() {
  const text = await readFile(here('../../../api/openapi.json'), 'utf8');
  const ast = await openapiTS(JSON.parse(text), { alphabetize: false, exportType: true, defaultNonNullable: false });
  return banner('api/openapi.json') + '\n' + astToString(ast);
}

async function messageTypes() {
  const doc = JSON.parse(await readFile(here('../../../api/asyncapi.json'), 'utf8'));
  const schemas = doc.components.schemas;
  // One root whose $defs are the document's schemas, so every one becomes a named export.
  const rewrite = (v) =>
    Array.isArray(v)
      ? v.map(rewrite)
      : v && typeof v === 'object'
        ? Object.fromEntries(
            Object.entries(v)
              .filter(([k]) => k !== 'discriminator' && k !== 'format')
              .map(([k, x]) => [
                k,
                k === '$ref' ? x.replace('#/components/schemas/', '#/$defs/') : rewrite(x),
              ]),
          )
        : v;
  const defs = Object.fromEntries(
    Object.entries(schemas).map(([name, s]) => [name, { ...rewrite(s), title: name }]),
  );
  defs.AnyEvent = {
    title: 'AnyEvent',
    description: 'Every event envelope, tagged by `event`.',
    oneOf: Object.keys(schemas)
      .filter((n) => n.endsWith('Event'))
      .map((n) => ({ $ref: `#/$defs/${n}` })),
  };
  // An empty object root whose $defs are the schemas: json-schema-to-typescript declares
  // every definition of an object root (`unreachableDefinitions`), each under its own name.
  const root = { type: 'object', additionalProperties: false, properties: {}, $defs: defs };
  let ts = await compile(root, 'Messages', {
    bannerComment: banner('api/asyncapi.json'),
    unreachableDefinitions: true,
    additionalProperties: false,
    strictIndexSignatures: true,
    maxItems: -1,
    format: true,
  });
  // The empty root itself is of no use.
  ts = ts.replace(/export interface Messages \{\}\n/, '');
  // The event names, in the document's order, for code that needs them at run time.
  const eventNames = Object.values(doc.components.messages)
    .filter((m) => m.payload?.$ref?.endsWith('Event'))
    .map((m) => m.name);
  return (
    ts +
    `\n/** Every event name of the contract. */\nexport const EVENT_NAMES = ${JSON.stringify(eventNames)} as const;\n` +
    `\n/** An event name. */\nexport type EventName = (typeof EVENT_NAMES)[number];\n`
  );
}

const outputs = {
  [here('../src/generated/openapi.ts')]: await openapiTypes(),
  [here('../src/generated/messages.ts')]: await messageTypes(),
};
let stale = 0;
async function settle(path, text) {
  if (check) {
    const current = await readFile(path, 'utf8').catch(() => '');
    if (current !== text) {
      console.error(`${path} is not current: run \`npm run generate\` in clients/typescript`);
      stale += 1;
    }
  } else {
    await mkdir(join(path, '..'), { recursive: true });
    await writeFile(path, text);
    console.log(`wrote ${path}`);
  }
}
for (const [path, text] of Object.entries(outputs)) await settle(path, text);

// The console's copy of the client: compiled from src/ as it is now.
const CONSOLE_FILES = ['index.js', 'errors.js', 'rest.js', 'realtime.js', 'generated/messages.js'];
const out = await mkdtemp(join(tmpdir(), 'showrunner-client-'));
try {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  execFileSync(process.execPath, [tsc, '-p', here('../tsconfig.json'), '--outDir', out, '--declaration', 'false'], {
    stdio: 'inherit',
  });
  for (const file of CONSOLE_FILES) {
    await settle(here(`../../../api/console/client/${file}`), await readFile(join(out, file), 'utf8'));
  }
} finally {
  await rm(out, { recursive: true, force: true });
}
if (stale > 0) process.exit(1);
if (check) console.log('generated types and the console client are current');

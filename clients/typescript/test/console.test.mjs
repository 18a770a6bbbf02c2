// The console in headless Chromium (Debian's `chromium`, driven by puppeteer-core; no browser
// download): two browser sessions as two users. Alice creates and edits an episode; Bob, who
// has the console open, sees it appear, sees it change and sees Alice among its viewers, all
// without a reload. Then the episode's parts: a composition created by one and renamed by the
// other, a file uploaded, and an export job whose status moves on, each seen live. Screenshots
// go to SHOWRUNNER_SCREENSHOTS (default a folder under /tmp).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';
import { Stack, SECRET } from './stack.mjs';

const CHROMIUM = process.env.CHROMIUM ?? ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find(existsSync);
const SHOTS = process.env.SHOWRUNNER_SCREENSHOTS ?? '/tmp/showrunner-console-screenshots';

let stack;
let browser;

before(async () => {
  assert.ok(CHROMIUM, 'chromium is not installed (apt-get install chromium)');
  mkdirSync(SHOTS, { recursive: true });
  stack = await new Stack().start();
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
});

after(async () => {
  await browser?.close();
  await stack?.stop();
});

/** A console signed in as `user` (minted with the stack's secret), in its own browser context. */
async function consoleAs(user, role) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  await page.setViewport({ width: 1400, height: 900 });
  const problems = [];
  page.on('pageerror', (e) => problems.push(String(e)));
  // A switch for the test to cut this page's connection and hold it down, as a lost network
  // would: open sockets are dropped and new ones fail until it is turned back.
  await page.evaluateOnNewDocument(() => {
    const Native = window.WebSocket;
    window.__sockets = [];
    window.__offline = false;
    window.WebSocket = class extends Native {
      constructor(...args) {
        if (window.__offline) throw new DOMException('offline (test)', 'NetworkError');
        super(...args);
        window.__sockets.push(this);
      }
    };
  });
  await page.goto(stack.origin + '/', { waitUntil: 'load' });
  await page.type('#secret', SECRET);
  await page.$eval('#user', (input, value) => (input.value = value), user);
  await page.select('#role', role);
  await page.click('#mint button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#state')?.textContent === 'open', { timeout: 20_000 });
  return { page, problems };
}

const shot = (page, name) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });

test('two users: one creates and edits, the other sees it live, with the viewer', async () => {
  const alice = await consoleAs('alice', 'admin');
  const bob = await consoleAs('bob', 'member');
  assert.equal(await alice.page.$eval('#who', (e) => e.textContent), 'Alice (admin)');
  await shot(bob.page, '1-bob-signed-in');

  // Alice creates an episode; Bob's list shows it without a reload.
  const title = `Pilot ${Date.now()}`;
  await alice.page.type('#new-title', title);
  await alice.page.click('#create-episode button');
  await bob.page.waitForFunction(
    (t) => [...document.querySelectorAll('#episodes li')].some((li) => li.textContent.startsWith(t)),
    { timeout: 20_000 },
    title,
  );
  await shot(bob.page, '2-bob-sees-the-episode');

  // Bob opens it; Alice (who opened it on creating it) is among its viewers.
  await bob.page.evaluate((t) => {
    [...document.querySelectorAll('#episodes li')].find((li) => li.textContent.startsWith(t)).click();
  }, title);
  await bob.page.waitForFunction(
    () => /Alice/.test(document.querySelector('#viewers').textContent) && /Bob/.test(document.querySelector('#viewers').textContent),
    { timeout: 20_000 },
  );
  await alice.page.waitForFunction(() => /Bob/.test(document.querySelector('#viewers').textContent), { timeout: 20_000 });
  await shot(bob.page, '3-bob-sees-alice-viewing');

  // Alice edits it; Bob's form and list change.
  const renamed = `${title}, renamed`;
  await alice.page.$eval('#edit-title', (input, v) => (input.value = v), renamed);
  await alice.page.select('#edit-status', 'published');
  await alice.page.click('#edit-episode button[type=submit]');
  await bob.page.waitForFunction(
    (t) => document.querySelector('#edit-title').value === t && document.querySelector('#edit-status').value === 'published',
    { timeout: 20_000 },
    renamed,
  );
  const listed = await bob.page.$$eval('#episodes li', (lis) => lis.map((li) => li.textContent));
  assert.ok(listed.some((t) => t.startsWith(renamed)), listed.join(' | '));
  await shot(bob.page, '4-bob-sees-the-change');

  // Bob's network goes away and comes back: his console keeps trying, reconnects at once on the
  // browser's `online`, resumes, and shows what changed meanwhile.
  const bobStates = [];
  await bob.page.exposeFunction('recordState', (s) => bobStates.push(s));
  await bob.page.evaluate(() => {
    new MutationObserver(() => window.recordState(document.querySelector('#state').textContent)).observe(
      document.querySelector('#state'),
      { childList: true, characterData: true, subtree: true },
    );
  });
  await bob.page.evaluate(() => {
    window.__offline = true;
    for (const socket of window.__sockets.splice(0)) socket.close();
  });
  await bob.page.waitForFunction(() => document.querySelector('#state').textContent !== 'open', { timeout: 20_000 });
  const offlineTitle = `${renamed}, while Bob was away`;
  await alice.page.$eval('#edit-title', (input, v) => (input.value = v), offlineTitle);
  await alice.page.click('#edit-episode button[type=submit]');
  await alice.page.waitForFunction(
    (t) => [...document.querySelectorAll('#episodes li')].some((li) => li.textContent.startsWith(t)),
    { timeout: 20_000 },
    offlineTitle,
  );
  await bob.page.evaluate(() => {
    window.__offline = false;
    window.dispatchEvent(new Event('online'));
  });
  await bob.page.waitForFunction(
    (t) => document.querySelector('#edit-title').value === t && document.querySelector('#state').textContent === 'open',
    { timeout: 20_000 },
    offlineTitle,
  );
  assert.ok(bobStates.includes('reconnecting'), `Bob's states: ${bobStates}`);
  await shot(bob.page, '5-bob-back-online');

  // Alice has her notification; the badge counts it.
  await alice.page.waitForFunction(() => Number(document.querySelector('#unread').textContent) >= 1, { timeout: 20_000 });
  // The activity feed moved on both sides.
  assert.ok((await bob.page.$$('#activity li')).length >= 2);
  await shot(alice.page, '6-alice');

  assert.deepEqual([...alice.problems, ...bob.problems], []);
});

/** The texts of the `li`s of list `#id`. */
const items = (page, id) => page.$$eval(`#${id} li`, (lis) => lis.map((li) => li.textContent));

/** Waits until some `li` of list `#id` on `page` has a text matching `pattern` (a RegExp source). */
function listed(page, id, pattern) {
  return page.waitForFunction(
    (id, p) => [...document.querySelectorAll(`#${id} li`)].some((li) => new RegExp(p).test(li.textContent)),
    { timeout: 30_000 },
    id,
    pattern,
  );
}

test("an episode's compositions, files and jobs, live on both sides", async () => {
  const alice = await consoleAs('alice', 'admin');
  const bob = await consoleAs('bob', 'member');

  // Alice creates an episode (her console opens it); Bob opens it too.
  const title = `Parts ${Date.now()}`;
  await alice.page.type('#new-title', title);
  await alice.page.click('#create-episode button');
  await alice.page.waitForFunction((t) => document.querySelector('#edit-title').value === t, { timeout: 20_000 }, title);
  await listed(bob.page, 'episodes', `^${title}`);
  await bob.page.evaluate((t) => {
    [...document.querySelectorAll('#episodes li')].find((li) => li.textContent.startsWith(t)).click();
  }, title);
  await bob.page.waitForFunction(() => /Alice/.test(document.querySelector('#viewers').textContent), { timeout: 20_000 });

  // A composition: Alice adds it, Bob sees it listed; Bob renames it, Alice sees the new name
  // and version.
  await alice.page.type('#new-composition', 'Rough cut');
  await alice.page.click('#create-composition button');
  await listed(bob.page, 'compositions', '^Rough cut \\(v1\\)');
  await shot(bob.page, '7-bob-sees-the-composition');
  await bob.page.$eval('#compositions li input.rename', (input) => (input.value = 'Fine cut'));
  await bob.page.click('#compositions li button.rename');
  await listed(alice.page, 'compositions', '^Fine cut \\(v2\\)');
  assert.deepEqual(
    (await items(alice.page, 'compositions')).map((t) => t.replace(/renamedelete$/, '')),
    ['Fine cut (v2) '],
  );
  await shot(alice.page, '8-alice-sees-the-rename');

  // A file: Alice uploads a small one through the page's file input; Bob sees it listed with
  // its size.
  const path = join(SHOTS, 'notes.txt');
  const bytes = 'Showrunner console test: a small file.\n';
  writeFileSync(path, bytes);
  const input = await alice.page.$('#file');
  await input.uploadFile(path);
  await alice.page.click('#upload-file button');
  await listed(bob.page, 'files', `^notes\\.txt \\(${Buffer.byteLength(bytes)} bytes\\)`);
  await listed(alice.page, 'files', '^notes\\.txt');
  await shot(bob.page, '9-bob-sees-the-file');

  // A job: Alice queues the episode's export; her jobs list shows it and follows its status
  // until it succeeded, and the file it writes appears in both consoles' file lists.
  const statuses = [];
  await alice.page.exposeFunction('recordJobs', (texts) => statuses.push(...texts));
  await alice.page.evaluate(() => {
    const report = () =>
      window.recordJobs([...document.querySelectorAll('#jobs li')].filter((li) => li.textContent.startsWith('episode.export')).map((li) => li.textContent));
    new MutationObserver(report).observe(document.querySelector('#jobs'), { childList: true, subtree: true, characterData: true });
  });
  await alice.page.click('#export-episode');
  await listed(alice.page, 'jobs', '^episode\\.export [0-9a-f]{8}: succeeded$');
  const seen = [...new Set(statuses.map((t) => t.replace(/^episode\.export [0-9a-f]{8}: /, '')))];
  assert.equal(seen.at(-1), 'succeeded', `statuses seen: ${seen}`);
  assert.ok(seen.length >= 2 && seen.some((s) => /^(queued|running)/.test(s)), `statuses seen: ${seen}`);
  await listed(alice.page, 'files', '^episode-[0-9a-f-]{36}\\.json');
  await listed(bob.page, 'files', '^episode-[0-9a-f-]{36}\\.json');
  await shot(alice.page, '10-alice-sees-the-job-and-its-file');

  assert.equal(await alice.page.$eval('#detail-error', (e) => e.textContent), '');
  assert.equal(await bob.page.$eval('#detail-error', (e) => e.textContent), '');
  assert.deepEqual([...alice.problems, ...bob.problems], []);
});

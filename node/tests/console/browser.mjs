// Drives Debian's Chromium through a node's web console, as node/tests/console.rs plans
// it: sign-in links, roles, CSRF, an approval by keyboard, the audit log's proofs
// checked in the browser (and an altered proof failing), the language switch, and a
// screenshot of each page. Prints one JSON line of what it saw; exits 1 on the first
// expectation that fails, saying which.
import { readFileSync, mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

const plan = JSON.parse(readFileSync(process.env.LIUTONG_CONSOLE_PLAN, "utf8"));
mkdirSync(plan.out_dir, { recursive: true });

function expect(condition, what) {
  if (!condition) throw new Error("expected " + what);
}

const browser = await chromium.launch({
  executablePath: plan.chromium,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    // Trust exactly the console's certificate, by its public key.
    "--ignore-certificate-errors-spki-list=" + plan.spki,
  ],
});
const seen = {};

async function shot(page, name) {
  await page.screenshot({ path: `${plan.out_dir}/${name}.png`, fullPage: true });
}

async function text(page, selector) {
  return (await page.locator(selector).first().textContent()).trim();
}

// Every link, button and visible field on the page is reached with Tab alone.
async function tabReachesEverything(page, name) {
  const wanted = await page.evaluate(() => {
    const all = document.querySelectorAll("a[href], button, input:not([type=hidden]), select, textarea");
    all.forEach((el, i) => el.setAttribute("data-tab-id", String(i)));
    return all.length;
  });
  const reached = new Set();
  await page.locator("body").focus();
  for (let i = 0; i < wanted * 2 + 5 && reached.size < wanted; i++) {
    await page.keyboard.press("Tab");
    const id = await page.evaluate(() => document.activeElement?.getAttribute("data-tab-id"));
    if (id !== null && id !== undefined) reached.add(id);
  }
  expect(reached.size === wanted, `Tab to reach all ${wanted} actions on ${name}, reached ${reached.size}`);
  return wanted;
}

try {
  // --- an auditor -------------------------------------------------------------
  const auditor = await browser.newContext();
  const a = await auditor.newPage();
  let answer = await a.goto(plan.auditor_link);
  expect(answer.ok() && new URL(a.url()).pathname === "/", "the auditor link to sign in and land on the overview");
  expect((await text(a, "#role")) === "审计员", "the auditor role, in Chinese by default");
  expect((await text(a, "main h1")) === "概览", "the overview titled in Chinese");
  await shot(a, "overview-auditor");
  seen.keyboard_overview = await tabReachesEverything(a, "the overview");

  // The same link a second time, in another browser: refused.
  const other = await browser.newContext();
  const o = await other.newPage();
  answer = await o.goto(plan.auditor_link);
  expect(answer.status() === 403, "a second use of the link to be refused with 403, got " + answer.status());
  expect((await text(o, "#message")).includes("已使用或已过期"), "the refusal to say the link was used or expired");
  await shot(o, "link-used-twice");
  await other.close();

  // Contracts: the waiting request is listed, without an approve button.
  await a.goto(plan.origin + "/contracts");
  const row = a.locator(`tr[data-negotiation="${plan.waiting}"]`);
  expect((await row.count()) === 1, "the waiting request in the auditor's contract list");
  expect((await a.locator("button.approve").count()) === 0, "no approve button for an auditor");
  await shot(a, "contracts-auditor");
  // Posting the form anyway, with the session's own token: the server refuses it.
  seen.auditor_post = await a.evaluate(async (id) => {
    const csrf = document.querySelector("input[name=csrf]").value;
    const r = await fetch(`/contracts/${id}/approve`, { method: "POST", body: new URLSearchParams({ csrf }) });
    return r.status;
  }, plan.waiting);
  expect(seen.auditor_post === 403, "the auditor's approval to be refused with 403, got " + seen.auditor_post);

  // The audit log: the checkpoint's signature and an inclusion proof, checked here.
  await a.goto(plan.origin + "/audit");
  await a.fill("#verifier-key", plan.verifier_key);
  await a.click("#pin-key");
  await a.click("#verify-checkpoint");
  await a.waitForSelector('#checkpoint-result:not([data-state="pending"])');
  expect((await a.getAttribute("#checkpoint-result", "data-state")) === "verified",
    "the checkpoint verified, but: " + (await text(a, "#checkpoint-result")));
  expect((await text(a, "#checkpoint-result")).includes("已在本浏览器中验证"), "the words 'verified in this browser'");
  expect((await a.getAttribute("#consistency-result", "data-state")) === "verified",
    "the first checkpoint kept: " + (await text(a, "#consistency-result")));
  seen.first_checkpoint_size = await a.getAttribute("#checkpoint", "data-size");
  const first = a.locator("button.verify-inclusion").first();
  const index = await first.getAttribute("data-index");
  await first.click();
  await a.waitForSelector(`#proof-${index}:not([data-state="pending"])`);
  expect((await a.getAttribute(`#proof-${index}`, "data-state")) === "verified",
    "the inclusion proof verified, but: " + (await text(a, `#proof-${index}`)));
  seen.inclusion_verified = Number(index);
  seen.keyboard_audit = await tabReachesEverything(a, "the audit page");
  await shot(a, "audit-verified");

  // The pinned key stays in this browser.
  await a.reload();
  expect((await a.inputValue("#verifier-key")) === plan.verifier_key, "the pinned key kept across a reload");

  // A proof altered on its way (one byte of the entry): the browser says it failed.
  const again = a.locator("button.verify-inclusion").first();
  const altered = await again.getAttribute("data-index");
  const size = await a.getAttribute("#checkpoint", "data-size");
  const genuine = await a.evaluate(async (path) => (await fetch(path)).json(), `/audit/proof/${altered}?size=${size}`);
  const entry = Buffer.from(genuine.entry, "base64");
  entry[0] ^= 1;
  const forged = { ...genuine, entry: entry.toString("base64") };
  await auditor.route("**/audit/proof/**", (route) => route.fulfill({ json: forged }));
  await again.click();
  await a.waitForSelector(`#proof-${altered}:not([data-state="pending"])`);
  expect((await a.getAttribute(`#proof-${altered}`, "data-state")) === "failed", "the altered proof to fail");
  seen.altered_proof = await text(a, `#proof-${altered}`);
  expect(seen.altered_proof.includes("根哈希"), "the failure to name the root: " + seen.altered_proof);
  await shot(a, "audit-altered-proof");
  await auditor.unroute("**/audit/proof/**");

  // A key other than the log's: no signature by it.
  await a.fill("#verifier-key", plan.other_key);
  await a.click("#verify-checkpoint");
  await a.waitForFunction(() => document.querySelector("#checkpoint-result").dataset.state === "failed");
  seen.wrong_key = await text(a, "#checkpoint-result");

  // The first checkpoint this browser verified is kept; once the log has grown and a
  // new checkpoint is signed, the new one must be shown consistent with it by an RFC
  // 9162 proof checked here. A refused sign-in link, from a browser without a session,
  // is an entry: the log grows after the checkpoint seen.
  await a.fill("#verifier-key", plan.verifier_key);
  await a.click("#pin-key");
  const firstSize = Number(seen.first_checkpoint_size);
  const bogusLink = await a.evaluate(async () =>
    (await fetch("/login?token=not-a-link", { credentials: "omit", redirect: "manual" })).status);
  expect(bogusLink === 403, "a made-up sign-in link refused: " + bogusLink);
  let grown = false;
  for (let i = 0; i < 50 && !grown; i++) {
    await a.reload();
    grown = Number(await a.getAttribute("#checkpoint", "data-size")) > firstSize;
    if (!grown) await a.waitForTimeout(200);
  }
  expect(grown, "a newer checkpoint than " + firstSize);
  const genuineSize = await a.getAttribute("#checkpoint", "data-size");
  const realProof = await a.evaluate(async (q) => (await fetch("/audit/consistency?" + q)).json(),
    `from=${firstSize}&to=${genuineSize}`);
  const badProof = { ...realProof, proof: realProof.proof.length ? realProof.proof.slice() : [""] };
  const firstHash = Buffer.from(badProof.proof[0] || "", "base64");
  const flipped = firstHash.length === 32 ? firstHash : Buffer.alloc(32);
  flipped[0] ^= 1;
  badProof.proof[0] = flipped.toString("base64");
  await auditor.route("**/audit/consistency**", (route) => route.fulfill({ json: badProof }));
  await a.click("#verify-checkpoint");
  await a.waitForFunction(() => document.querySelector("#consistency-result").dataset.state !== "pending");
  expect((await a.getAttribute("#consistency-result", "data-state")) === "failed",
    "an altered consistency proof to fail: " + (await text(a, "#consistency-result")));
  seen.altered_consistency = await text(a, "#consistency-result");
  await shot(a, "audit-altered-consistency");
  await auditor.unroute("**/audit/consistency**");
  await a.reload();
  await a.click("#verify-checkpoint");
  await a.waitForFunction(() => document.querySelector("#consistency-result").dataset.state !== "pending");
  expect((await a.getAttribute("#consistency-result", "data-state")) === "verified",
    "the newer checkpoint consistent with the first: " + (await text(a, "#consistency-result")));
  seen.consistency = await text(a, "#consistency-result");
  await shot(a, "audit-consistent");

  // ---- evidence: search, kept checkpoints, cosignatures, charts ----------------------
  // Search by the agreement: each match's proof, from the search answer, checked here
  // against the checkpoint it came with.
  await a.click("#search-link");
  await a.fill('input[name="agreement"]', plan.agreement);
  await Promise.all([a.waitForURL(/\/audit\/search\?/), a.click("#search-button")]);
  const matchButtons = a.locator("button.verify-match");
  seen.search_matches = await matchButtons.count();
  expect(seen.search_matches >= 2, "the agreement's entries found, got " + seen.search_matches);
  for (let i = 0; i < seen.search_matches; i++) {
    const button = matchButtons.nth(i);
    const at = await button.getAttribute("data-index");
    await button.click();
    await a.waitForSelector(`#match-${at}:not([data-state="pending"])`);
    expect((await a.getAttribute(`#match-${at}`, "data-state")) === "verified",
      `match ${at} verified, but: ` + (await text(a, `#match-${at}`)));
  }
  seen.keyboard_search = await tabReachesEverything(a, "the search results");
  await shot(a, "search-verified");

  // The same search answer with one byte of a matched entry altered on its way.
  const searchUrl = a.url();
  const genuinePage = await a.evaluate(async (url) => (await fetch(url)).text(), searchUrl);
  const alteredPage = genuinePage.replace(/data-entry="(.)/, (_, c) => 'data-entry="' + (c === "A" ? "B" : "A"));
  expect(alteredPage !== genuinePage, "an entry to alter in the search answer");
  await auditor.route("**/audit/search?**", (route) =>
    route.fulfill({ contentType: "text/html; charset=utf-8", body: alteredPage }));
  await a.goto(searchUrl);
  const alteredMatch = a.locator("button.verify-match").first();
  const alteredAt = await alteredMatch.getAttribute("data-index");
  await alteredMatch.click();
  await a.waitForSelector(`#match-${alteredAt}:not([data-state="pending"])`);
  expect((await a.getAttribute(`#match-${alteredAt}`, "data-state")) === "failed", "the altered search proof to fail");
  seen.altered_search_proof = await text(a, `#match-${alteredAt}`);
  await shot(a, "search-altered-proof");
  await auditor.unroute("**/audit/search?**");

  // Bad input: the service's own message on the page, with 400.
  answer = await a.goto(plan.origin + "/audit/search?participant=" + encodeURIComponent("not an ID!"));
  expect(answer.status() === 400, "a malformed participant refused with 400, got " + answer.status());
  expect((await text(a, "#search-error")).includes(plan.participant_refusal),
    "the service's message for a malformed participant: " + (await text(a, "#search-error")));
  answer = await a.goto(plan.origin + "/audit/search?agreement=" + plan.agreement + "&since=2026-03-02&until=2026-03-01");
  expect(answer.status() === 400, "until before since refused with 400, got " + answer.status());
  seen.search_until_before_since = await text(a, "#search-error");
  await shot(a, "search-refused");

  // The kept checkpoints: each signature, each cosignature and the consistency between
  // neighbours checked here.
  await a.goto(plan.origin + "/audit");
  await a.click("#checkpoints-link");
  await a.click("#verify-checkpoints");
  await a.waitForFunction(() => [...document.querySelectorAll("section.kept output")]
    .every((o) => o.dataset.state !== "pending"));
  const states = await a.evaluate(() => Object.fromEntries(
    ["kept-result", "kept-consistency", "cosignature-result"].map((c) => [c,
      [...document.querySelectorAll("output." + c)].map((o) => o.dataset.state + ": " + o.textContent)])));
  const verifiedOf = (c) => states[c].filter((t) => t.startsWith("verified")).length;
  expect(states["kept-result"].length >= 2 && verifiedOf("kept-result") === states["kept-result"].length,
    "every kept checkpoint shown verified: " + JSON.stringify(states["kept-result"]));
  expect(states["kept-consistency"].length >= 1 && verifiedOf("kept-consistency") === states["kept-consistency"].length,
    "every neighbour consistent: " + JSON.stringify(states["kept-consistency"]));
  expect(verifiedOf("cosignature-result") >= 1 && verifiedOf("cosignature-result") === states["cosignature-result"].length,
    "the witness's cosignatures verified: " + JSON.stringify(states["cosignature-result"]));
  seen.kept_verified = verifiedOf("kept-result");
  seen.cosignatures_verified = verifiedOf("cosignature-result");
  seen.keyboard_checkpoints = await tabReachesEverything(a, "the checkpoint history");
  await shot(a, "checkpoints-verified");

  // The charts: a bar per day, the decisions the test made, the bytes delivered.
  await a.goto(plan.origin + "/audit");
  await a.click("#charts-link");
  const chart = async (id, cls) => a.evaluate(([id, cls]) => {
    const values = [...document.querySelectorAll(`svg#${id} rect.${cls}`)].map((r) => Number(r.dataset.value));
    return { bars: document.querySelectorAll(`svg#${id} g.bar`).length, rects: values.length, sum: values.reduce((x, y) => x + y, 0) };
  }, [id, cls]);
  const growth = await chart("log-growth", "entries");
  expect(growth.bars === 30 && growth.rects === 30, "30 days of log growth: " + JSON.stringify(growth));
  const logSize = Number(await a.getAttribute("#decisions-counted", "data-size"));
  expect(growth.sum === logSize, `the days' entries to add up to the log's ${logSize}: ` + JSON.stringify(growth));
  expect((await a.getAttribute("#decisions-counted", "data-complete")) === "true", "every decision counted");
  const permits = await chart("decisions", "permit");
  const denials = await chart("decisions", "deny");
  expect(permits.bars === 30 && permits.rects === 30 && denials.rects === 30, "30 days of decisions");
  expect(permits.sum === plan.permits && denials.sum === plan.denials,
    `${plan.permits} permits and ${plan.denials} denials, got ${permits.sum} and ${denials.sum}`);
  const bytes = await chart("bytes", "bytes");
  expect(bytes.bars === 1 && bytes.sum === plan.delivered_bytes, "one agreement's delivered bytes: " + JSON.stringify(bytes));
  expect((await a.locator("#bytes-table tbody th").first().textContent()) === plan.agreement, "the agreement named in the table");
  seen.keyboard_charts = await tabReachesEverything(a, "the charts");
  await shot(a, "charts");
  await a.goto(plan.origin + "/audit");
  // ---- end of evidence ---------------------------------------------------------------

  // English.
  await a.click("#lang-switch");
  expect((await text(a, "main h1")) === "Audit log", "the audit page in English after the switch");
  await a.fill("#verifier-key", plan.verifier_key);
  await a.click("#verify-checkpoint");
  await a.waitForFunction(() => document.querySelector("#checkpoint-result").dataset.state === "verified");
  expect((await text(a, "#checkpoint-result")).includes("verified in this browser"), "the English words");
  await shot(a, "audit-english");
  await auditor.close();

  // --- an admin ---------------------------------------------------------------
  const admin = await browser.newContext();
  const p = await admin.newPage();
  answer = await p.goto(plan.admin_link);
  expect(answer.ok() && (await text(p, "#role")) === "管理员", "the admin link to sign in as admin");
  expect((await text(p, "#pending")) === "1", "one request waiting for approval on the overview");
  await shot(p, "overview-admin");

  // A form without the session's token: refused, nothing approved.
  await p.goto(plan.origin + "/contracts");
  seen.forged_post = await p.evaluate(async (id) => {
    const r = await fetch(`/contracts/${id}/approve`, { method: "POST", body: new URLSearchParams({ csrf: "forged" }) });
    return r.status;
  }, plan.waiting);
  expect(seen.forged_post === 403, "a form without the token to be refused with 403, got " + seen.forged_post);
  await p.reload();
  const waiting = p.locator(`tr[data-negotiation="${plan.waiting}"]`);
  expect((await text(waiting, "td.state")) === "REQUESTED", "the request still waiting after the forged form");
  seen.keyboard_contracts = await tabReachesEverything(p, "the contracts page");
  await shot(p, "contracts-admin");

  // Publish through the form: a bad policy is refused as it is typed and when posted,
  // with the policy crate's own message; a good one publishes.
  await p.goto(plan.origin + "/products/new");
  await p.fill('input[name="title"]', "Bus stops");
  await p.selectOption('select[name="classification"]', "general-2");
  await p.selectOption('select[name="format"]', "csv");
  await p.locator("#policy-text").pressSequentially(plan.bad_policy.slice(0, 40));
  await p.fill("#policy-text", plan.bad_policy);
  await p.waitForFunction(() => document.querySelector("#policy-check").dataset.state === "failed");
  seen.policy_as_typed = await text(p, "#policy-check");
  expect(seen.policy_as_typed === plan.bad_policy_message,
    "the policy crate's message as the policy is typed: " + seen.policy_as_typed);
  await p.setInputFiles('input[name="file"]', {
    name: "stops.csv", mimeType: "text/csv", buffer: Buffer.from(plan.product_csv),
  });
  await shot(p, "publish-bad-policy");
  const [refusedPost] = await Promise.all([
    p.waitForResponse((r) => r.request().method() === "POST" && new URL(r.url()).pathname === "/products"),
    p.click("#publish-button"),
  ]);
  expect(refusedPost.status() === 400, "the bad policy refused with 400, got " + refusedPost.status());
  expect((await text(p, "#message")) === plan.bad_policy_message, "the refusal to give the policy crate's message");
  await p.goBack();
  await p.fill('input[name="title"]', "Bus stops");
  await p.selectOption('select[name="classification"]', "general-2");
  await p.selectOption('select[name="format"]', "csv");
  await p.fill("#policy-text", plan.good_policy);
  await p.waitForFunction(() => document.querySelector("#policy-check").dataset.state === "verified");
  await p.setInputFiles('input[name="file"]', {
    name: "stops.csv", mimeType: "text/csv", buffer: Buffer.from(plan.product_csv),
  });
  seen.keyboard_publish = await tabReachesEverything(p, "the publish form");
  await Promise.all([p.waitForURL(/\/products\/prd-/), p.click("#publish-button")]);
  seen.published = new URL(p.url()).pathname.split("/").pop();
  expect((await text(p, "#classification")) === "general-2", "the published product's page");
  await shot(p, "product");
  await p.goto(plan.origin + "/products");
  seen.keyboard_products = await tabReachesEverything(p, "the products page");
  await shot(p, "products");

  // Approve with the keyboard: Tab to the row's approve button, press Enter.
  await p.goto(plan.origin + "/contracts");
  const approveButton = waiting.locator("button.approve");
  await approveButton.evaluate((el) => el.setAttribute("data-target", "yes"));
  await p.locator("body").focus();
  let onIt = false;
  for (let i = 0; i < 100 && !onIt; i++) {
    await p.keyboard.press("Tab");
    onIt = await p.evaluate(() => document.activeElement?.getAttribute("data-target") === "yes");
  }
  expect(onIt, "Tab to reach the approve button");
  const [posted] = await Promise.all([
    p.waitForResponse((r) => r.request().method() === "POST" && r.url().endsWith("/approve")),
    p.waitForResponse((r) => r.request().method() === "GET" && new URL(r.url()).pathname === "/contracts"),
    p.keyboard.press("Enter"),
  ]);
  expect(posted.status() === 303, "the approval answered with a redirect, got " + posted.status());
  await p.waitForLoadState("load");
  const state = await text(p.locator(`tr[data-negotiation="${plan.waiting}"]`), "td.state");
  expect(state !== "REQUESTED", "the request no longer waiting after the approval, still " + state);
  seen.after_approval = state;
  await shot(p, "contracts-approved");
  await admin.close();

  // --- flows: peers' catalogs, transfers, received copies, alerts --------------
  // An auditor: the alert on the overview; the trust list's members but no catalog and
  // no request button (and the form refused when posted anyway); the completed pull at
  // 100 %; the received copy with its one use, and that use from the audit log.
  const flowsAuditor = await browser.newContext();
  const fa = await flowsAuditor.newPage();
  answer = await fa.goto(plan.flows_auditor_link);
  expect(answer.ok() && (await text(fa, "#role")) === "审计员", "the second auditor link to sign in");
  const alertRow = fa.locator('#alerts tr[data-rule="policy_denials"]');
  expect((await alertRow.count()) >= 1, "the policy-denial alert among the latest alerts on the overview");
  expect((await fa.getAttribute('#alerts tr[data-rule="policy_denials"] td.severity', "data-severity")) === "warning",
    "the alert's severity");
  seen.flows_alert = await text(alertRow, "td.detail");
  expect(seen.flows_alert.includes("policy denials"), "the alert's detail: " + seen.flows_alert);
  await shot(fa, "overview-alert");

  await fa.goto(plan.origin + "/peers");
  expect((await fa.locator("#members tbody tr").count()) >= 1, "the trust list's members on the peers page");
  await fa.fill("#peer-address", plan.flows_peer);
  await Promise.all([fa.waitForURL(/\/peers\?peer=/), fa.click("#browse")]);
  expect((await fa.locator("#catalog-refused").count()) === 1, "the auditor refused a peer's catalog, in words");
  expect((await fa.locator("button.request-contract").count()) === 0, "no request-a-contract button for an auditor");
  seen.flows_auditor_catalog = await text(fa, "#catalog-refused");
  await shot(fa, "peers-auditor");
  seen.flows_auditor_request_post = await fa.evaluate(async ({ peer, offer }) => {
    const csrf = document.querySelector("input[name=csrf]").value;
    const body = new URLSearchParams({ csrf, peer, offer_id: offer, purpose: "publicService" });
    return (await fetch("/peers/request", { method: "POST", body })).status;
  }, { peer: plan.flows_peer, offer: plan.flows_offer });
  expect(seen.flows_auditor_request_post === 403,
    "the auditor's contract request refused with 403, got " + seen.flows_auditor_request_post);

  await fa.goto(plan.origin + "/transfers");
  const pulled = fa.locator(`#transfers tr[data-agreement="${plan.flows_agreement}"]`);
  expect((await pulled.count()) === 1, "the pull listed among the transfers");
  expect((await text(pulled, "td.state")) === "COMPLETED", "the pull completed");
  expect((await text(pulled, "span.percent")) === "100 %", "the pull at 100 %: " + (await text(pulled, "span.percent")));
  const bar = pulled.locator("progress");
  expect((await bar.getAttribute("value")) === (await bar.getAttribute("max")), "the progress bar full");
  await shot(fa, "transfers-auditor");

  await fa.goto(plan.origin + "/copies");
  const copy = fa.locator(`#copies tr[data-agreement="${plan.flows_agreement}"]`);
  expect((await copy.count()) === 1, "the received copy listed");
  expect((await text(copy, "td.uses")) === "1", "one use of the copy after one read, got " + (await text(copy, "td.uses")));
  seen.keyboard_copies = await tabReachesEverything(fa, "the received copies");
  await shot(fa, "copies-auditor");
  await Promise.all([fa.waitForURL(/\/copies\/agr-/), copy.locator("td.uses a").click()]);
  const uses = fa.locator("#uses tbody tr");
  expect((await uses.count()) === 1, "the copy's one use from the audit log, got " + (await uses.count()));
  expect((await text(uses, "td.detail")).includes("read of the copy"), "the use's audit entry");
  await shot(fa, "copy-uses");
  await flowsAuditor.close();

  // An admin: a peer that cannot be reached and a mistyped address, said plainly; the
  // peer's catalog with the offer and its policy; a contract requested by keyboard;
  // transfers and copies reached by keyboard.
  const flowsAdmin = await browser.newContext();
  const fp = await flowsAdmin.newPage();
  answer = await fp.goto(plan.flows_admin_link);
  expect(answer.ok() && (await text(fp, "#role")) === "管理员", "the second admin link to sign in");
  answer = await fp.goto(plan.origin + "/peers?peer=" + encodeURIComponent(plan.flows_unreachable));
  expect(answer.status() === 502, "an unreachable peer answered with 502, got " + answer.status());
  seen.flows_unreachable = await text(fp, "#catalog-refused");
  expect(seen.flows_unreachable.startsWith("无法连接该对端"), "an unreachable peer said so: " + seen.flows_unreachable);
  await shot(fp, "peers-unreachable");
  answer = await fp.goto(plan.origin + "/peers?peer=" + encodeURIComponent("not an address"));
  expect(answer.status() === 400, "a malformed address refused with 400, got " + answer.status());
  expect((await text(fp, "#catalog-refused")).includes("host:port"), "the refusal says what to type");

  await fp.goto(plan.origin + "/peers");
  await fp.fill("#peer-address", plan.flows_peer);
  await Promise.all([fp.waitForURL(/\/peers\?peer=/), fp.click("#browse")]);
  const offer = fp.locator(`#offers tr[data-offer="${plan.flows_offer}"]`);
  expect((await offer.count()) === 1, "the peer's offer in its catalog");
  expect((await text(offer, "td.title")) === "Air quality", "the offer's title");
  seen.flows_policy = await text(offer, "ul.policy");
  expect(seen.flows_policy.includes("publicService"), "the offer's policy summarised: " + seen.flows_policy);
  seen.keyboard_peers = await tabReachesEverything(fp, "the peers' catalogs");
  await shot(fp, "peers-admin");
  await offer.locator('input[name="purpose"]').fill("publicService");
  const [requested] = await Promise.all([
    fp.waitForResponse((r) => r.request().method() === "POST" && new URL(r.url()).pathname === "/peers/request"),
    fp.waitForURL(/\/contracts$/),
    offer.locator("button.request-contract").press("Enter"),
  ]);
  expect(requested.status() === 303, "the request answered with a redirect, got " + requested.status());
  seen.flows_requested = await fp.evaluate((id) =>
    Array.from(document.querySelectorAll("#contracts code")).filter((c) => c.textContent === id).length,
    plan.flows_offer);
  expect(seen.flows_requested === 2, "both contracts for the offer listed, got " + seen.flows_requested);

  await fp.goto(plan.origin + "/transfers");
  expect((await text(fp.locator(`#transfers tr[data-agreement="${plan.flows_agreement}"]`), "span.percent")) === "100 %",
    "the pull at 100 % for the admin too");
  seen.keyboard_transfers = await tabReachesEverything(fp, "the transfers");
  await shot(fp, "transfers-admin");
  await fp.goto(plan.origin + "/copies");
  seen.keyboard_copies_admin = await tabReachesEverything(fp, "the received copies");
  await shot(fp, "copies-admin");
  await flowsAdmin.close();
  // --- end of flows -----------------------------------------------------------

  console.log(JSON.stringify({ ok: true, ...seen }));
} catch (e) {
  console.error(String(e && e.stack ? e.stack : e));
  // Where each open page was, and a picture of it.
  for (const [i, context] of browser.contexts().entries()) {
    for (const [j, page] of context.pages().entries()) {
      console.error(`open page ${i}.${j}: ${page.url()}`);
      await shot(page, `failed-${i}-${j}`).catch(() => {});
    }
  }
  console.log(JSON.stringify({ ok: false, error: String(e.message || e), ...seen }));
  process.exitCode = 1;
} finally {
  await browser.close();
}

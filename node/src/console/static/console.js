// Liutong console: checks the audit log's proofs in this browser, with WebCrypto.
//
// - The checkpoint is a C2SP signed note; its Ed25519 signature is checked against the
//   verifier key the auditor pins (name+keyid+base64(0x01 || key)); the key ID is
//   SHA-256(name || 0x0A || 0x01 || key)[:4].
// - An inclusion proof is checked as RFC 9162 section 2.1.3.2 says, with
//   leaf = SHA-256(0x00 || entry) and node = SHA-256(0x01 || left || right), against the
//   root of the checkpoint whose signature verified.
// - A verified checkpoint is checked against the one this browser verified before for
//   the same log, with an RFC 9162 consistency proof (section 2.1.4.2): the log may
//   only grow. Nothing the server says about a proof is taken on trust.
"use strict";

const KEY_STORE = "liutong-verifier-key";
const enc = new TextEncoder();

function words() {
  const t = document.getElementById("words");
  return t ? t.dataset : {};
}

function b64decode(text) {
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

function equal(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

class Failure extends Error {}

// name+hex(key id)+base64(type || 32-byte Ed25519 key); type 0x01 for a log's key,
// 0x04 for a witness's cosignature key.
async function parseVerifierKey(text, w, type = 0x01) {
  // The base64 part may itself hold "+": split at the first two only.
  const m = /^([^+\s]+)\+([0-9a-f]{8})\+([A-Za-z0-9+/=]+)$/.exec(text.trim());
  if (!m) throw new Failure(w.keyMalformed);
  const parts = [m[1], m[2], m[3]];
  let raw;
  try { raw = b64decode(parts[2]); } catch { throw new Failure(w.keyMalformed); }
  if (raw.length !== 33 || raw[0] !== type) throw new Failure(w.keyMalformed);
  const id = (await sha256(concat(enc.encode(parts[0] + "\n"), raw))).slice(0, 4);
  const hex = Array.from(id, (b) => b.toString(16).padStart(2, "0")).join("");
  if (hex !== parts[1]) throw new Failure(w.keyMalformed);
  return { name: parts[0], id, key: raw.slice(1) };
}

// The checkpoint's size and root, once its signature by `key` verifies.
async function verifyCheckpoint(note, keyText, w) {
  if (!keyText.trim()) throw new Failure(w.noKey);
  const key = await parseVerifierKey(keyText, w);
  const split = note.indexOf("\n\n");
  if (split < 0) throw new Failure(w.checkpointMalformed);
  const text = note.slice(0, split + 1);
  const lines = text.split("\n");
  if (lines.length < 4 || !/^[0-9]+$/.test(lines[1])) throw new Failure(w.checkpointMalformed);
  let root;
  try { root = b64decode(lines[2]); } catch { throw new Failure(w.checkpointMalformed); }
  if (root.length !== 32) throw new Failure(w.checkpointMalformed);
  const prefix = "\u2014 " + key.name + " ";
  let found = false;
  for (const line of note.slice(split + 2).split("\n")) {
    if (!line.startsWith(prefix)) continue;
    let sig;
    try { sig = b64decode(line.slice(prefix.length)); } catch { continue; }
    if (sig.length !== 68 || !equal(sig.slice(0, 4), key.id)) continue;
    found = true;
    const pub = await crypto.subtle.importKey("raw", key.key, { name: "Ed25519" }, false, ["verify"]);
    if (await crypto.subtle.verify({ name: "Ed25519" }, pub, sig.slice(4), enc.encode(text))) {
      return { origin: lines[0], size: Number(lines[1]), root };
    }
  }
  throw new Failure(found ? w.signatureInvalid : w.noSignature);
}

// RFC 9162 2.1.3.2: the root an inclusion proof leads to.
async function rootFromInclusion(index, size, entry, proof, w) {
  if (!Number.isSafeInteger(index) || !Number.isSafeInteger(size) || index >= size) {
    throw new Failure(w.proofMalformed);
  }
  let fn = index;
  let sn = size - 1;
  let r = await sha256(concat(new Uint8Array([0]), entry));
  for (const p of proof) {
    if (p.length !== 32 || sn === 0) throw new Failure(w.proofMalformed);
    if (fn % 2 === 1 || fn === sn) {
      r = await sha256(concat(new Uint8Array([1]), p, r));
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
      }
    } else {
      r = await sha256(concat(new Uint8Array([1]), r, p));
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  if (sn !== 0) throw new Failure(w.proofMalformed);
  return r;
}

// The node's RFC 9162 consistency proof from tree size `from` to `to` (none between
// equal sizes), refused unless it answers for exactly those sizes.
async function consistencyProof(from, to, w) {
  if (from === to) return [];
  const answer = await fetch("/audit/consistency?from=" + from + "&to=" + to);
  const p = answer.ok ? await answer.json() : null;
  if (!p || p.from !== from || p.to !== to || !Array.isArray(p.proof)) {
    throw new Failure(w.notConsistent);
  }
  return p.proof.map(b64decode);
}

// RFC 9162 2.1.4.2: whether `proof` shows the tree of size `first` with root `firstRoot`
// to be a prefix of the tree of size `second` with root `secondRoot`.
async function consistent(first, firstRoot, second, secondRoot, proof) {
  if (first === second) return proof.length === 0 && equal(firstRoot, secondRoot);
  if (first === 0 || first > second || proof.some((p) => p.length !== 32)) return false;
  let path = proof.slice();
  // A first tree that is a whole subtree is its own first node.
  let n = first;
  while (n % 2 === 0) n /= 2;
  if (n === 1) path = [firstRoot, ...path];
  if (path.length === 0) return false;
  let fn = first - 1;
  let sn = second - 1;
  while (fn % 2 === 1) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
  let fr = path[0];
  let sr = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      fr = await sha256(concat(new Uint8Array([1]), c, fr));
      sr = await sha256(concat(new Uint8Array([1]), c, sr));
      while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else {
      sr = await sha256(concat(new Uint8Array([1]), sr, c));
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && equal(fr, firstRoot) && equal(sr, secondRoot);
}

const SEEN_STORE = "liutong-verified-checkpoint";

function b64encode(bytes) {
  return btoa(String.fromCharCode(...bytes));
}

// The checkpoint just verified against the one this browser verified before for the
// same log (kept in this browser): the log may only have grown. The kept one moves on
// only when the new one is shown consistent with it.
async function checkConsistency(c, w) {
  const out = document.getElementById("consistency-result");
  const key = SEEN_STORE + ":" + c.origin;
  const kept = JSON.parse(localStorage.getItem(key) || "null");
  const keep = () => localStorage.setItem(key, JSON.stringify({ size: c.size, root: b64encode(c.root) }));
  if (!kept) {
    keep();
    show(out, true, w.firstCheckpoint + " (" + c.size + ")");
    return;
  }
  if (kept.size > c.size) {
    show(out, false, w.logShrank + " (" + kept.size + " > " + c.size + ")");
    return;
  }
  let ok = false;
  try {
    const proof = await consistencyProof(kept.size, c.size, w);
    ok = await consistent(kept.size, b64decode(kept.root), c.size, c.root, proof);
  } catch {
    ok = false;
  }
  if (!ok) {
    show(out, false, w.notConsistent + " (" + kept.size + " → " + c.size + ")");
    return;
  }
  keep();
  show(out, true, w.consistentWith + " " + kept.size);
}

function show(output, ok, text) {
  output.dataset.state = ok ? "verified" : "failed";
  output.textContent = text;
}

function keyInput() {
  return document.getElementById("verifier-key");
}

async function checkpointNow(w) {
  const note = document.getElementById("checkpoint-note");
  if (!note) throw new Failure(w.checkpointMalformed);
  return verifyCheckpoint(note.textContent, keyInput().value, w);
}

async function onVerifyCheckpoint() {
  const w = words();
  const out = document.getElementById("checkpoint-result");
  try {
    const c = await checkpointNow(w);
    show(out, true, w.verified + " (" + c.size + ")");
    await checkConsistency(c, w);
  } catch (e) {
    show(out, false, e instanceof Failure ? e.message : String(e));
  }
}

async function onVerifyInclusion(event) {
  const w = words();
  const index = Number(event.currentTarget.dataset.index);
  const out = document.getElementById("proof-" + index);
  try {
    const c = await checkpointNow(w);
    const answer = await fetch("/audit/proof/" + index + "?size=" + c.size, { credentials: "same-origin" });
    if (!answer.ok) throw new Failure(w.proofMalformed + " (HTTP " + answer.status + ")");
    const p = await answer.json();
    if (p.index !== index || p.size !== c.size || !Array.isArray(p.proof)) {
      throw new Failure(w.proofMalformed);
    }
    let entry, proof;
    try {
      entry = b64decode(p.entry);
      proof = p.proof.map(b64decode);
    } catch { throw new Failure(w.proofMalformed); }
    const root = await rootFromInclusion(index, c.size, entry, proof, w);
    if (!equal(root, c.root)) throw new Failure(w.rootMismatch);
    show(out, true, w.verified);
  } catch (e) {
    show(out, false, e instanceof Failure ? e.message : String(e));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const input = keyInput();
  if (!input) return;
  input.value = localStorage.getItem(KEY_STORE) || "";
  document.getElementById("pin-key").addEventListener("click", () => {
    localStorage.setItem(KEY_STORE, input.value.trim());
  });
  document.getElementById("verify-checkpoint").addEventListener("click", onVerifyCheckpoint);
  for (const button of document.querySelectorAll("button.verify-inclusion")) {
    button.addEventListener("click", onVerifyInclusion);
  }
});

// The publish form: the policy is read by the node as it is typed (after a pause), with
// the same reader and guardrails publishing uses, and its message shown under it.
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("publish");
  if (!form) return;
  const text = document.getElementById("policy-text");
  const out = document.getElementById("policy-check");
  const ok = document.getElementById("policy-words").dataset.ok;
  let timer = null;
  let asked = 0;
  async function check() {
    const ticket = ++asked;
    if (!text.value.trim()) {
      out.dataset.state = "pending";
      out.textContent = "";
      return;
    }
    const body = new URLSearchParams({
      csrf: form.elements.csrf.value,
      policy: text.value,
      classification: form.elements.classification.value,
    });
    const answer = await fetch("/products/policy-check", { method: "POST", body });
    if (ticket !== asked) return; // a later check is on its way
    const result = answer.ok ? await answer.json() : { ok: false, message: "HTTP " + answer.status };
    out.dataset.state = result.ok ? "verified" : "failed";
    out.textContent = result.ok ? ok : result.message;
  }
  const soon = () => { clearTimeout(timer); timer = setTimeout(check, 300); };
  text.addEventListener("input", soon);
  form.elements.classification.addEventListener("change", soon);
});

// ---- evidence: search matches, kept checkpoints, cosignatures ------------------------

// A search match: its entry and proof came with the search answer; the root they lead
// to must be the root of the checkpoint shown with them, verified here.
async function onVerifyMatch(event) {
  const w = words();
  const data = event.currentTarget.dataset;
  const index = Number(data.index);
  const out = document.getElementById("match-" + index);
  try {
    const c = await checkpointNow(w);
    if (Number(data.size) !== c.size) throw new Failure(w.proofMalformed);
    let entry, proof;
    try {
      entry = b64decode(data.entry);
      proof = data.proof.split(" ").filter((p) => p.length > 0).map(b64decode);
    } catch { throw new Failure(w.proofMalformed); }
    const root = await rootFromInclusion(index, c.size, entry, proof, w);
    if (!equal(root, c.root)) throw new Failure(w.rootMismatch);
    show(out, true, w.verified);
  } catch (e) {
    show(out, false, e instanceof Failure ? e.message : String(e));
  }
}

// C2SP tlog-cosignature/v1: the line's signature is key ID (4 bytes) || time (8 bytes,
// big-endian) || Ed25519 signature over "cosignature/v1\ntime <t>\n" || checkpoint body.
async function verifyCosignature(note, keyText, w) {
  const key = await parseVerifierKey(keyText, w, 0x04);
  const split = note.indexOf("\n\n");
  if (split < 0) throw new Failure(w.checkpointMalformed);
  const body = note.slice(0, split + 1);
  const prefix = "\u2014 " + key.name + " ";
  let found = false;
  for (const line of note.slice(split + 2).split("\n")) {
    if (!line.startsWith(prefix)) continue;
    let sig;
    try { sig = b64decode(line.slice(prefix.length)); } catch { continue; }
    if (sig.length !== 76 || !equal(sig.slice(0, 4), key.id)) continue;
    found = true;
    const time = new DataView(sig.buffer, sig.byteOffset + 4, 8).getBigUint64(0);
    const message = enc.encode("cosignature/v1\ntime " + time.toString() + "\n" + body);
    const pub = await crypto.subtle.importKey("raw", key.key, { name: "Ed25519" }, false, ["verify"]);
    if (await crypto.subtle.verify({ name: "Ed25519" }, pub, sig.slice(12), message)) return time;
  }
  throw new Failure(found ? w.cosignatureInvalid : w.noCosignature);
}

// Every kept checkpoint shown: its signature by the pinned key, each cosignature by the
// key its witness's credential gives, and consistency with the next older one shown.
async function onVerifyKept() {
  const w = words();
  const keyText = localStorage.getItem(KEY_STORE) || "";
  const keyOut = document.getElementById("checkpoints-key");
  if (!keyText.trim()) {
    show(keyOut, false, w.noKey);
    return;
  }
  keyOut.dataset.state = "verified";
  keyOut.textContent = keyText.split("+")[0];
  const verified = new Map();
  for (const section of document.querySelectorAll("section.kept")) {
    const note = section.querySelector("pre.kept-note").textContent;
    const out = section.querySelector("output.kept-result");
    try {
      const c = await verifyCheckpoint(note, keyText, w);
      if (c.size !== Number(section.dataset.size)) throw new Failure(w.checkpointMalformed);
      verified.set(c.size, c);
      show(out, true, w.verified + " (" + c.size + ")");
    } catch (e) {
      show(out, false, e instanceof Failure ? e.message : String(e));
    }
    for (const cosig of section.querySelectorAll("output.cosignature-result")) {
      try {
        await verifyCosignature(note, cosig.dataset.key, w);
        show(cosig, true, w.verified);
      } catch (e) {
        show(cosig, false, e instanceof Failure ? e.message : String(e));
      }
    }
  }
  for (const out of document.querySelectorAll("output.kept-consistency")) {
    const newer = verified.get(Number(out.closest("section.kept").dataset.size));
    const older = verified.get(Number(out.dataset.older));
    let ok = false;
    if (newer && older) {
      try {
        const proof = await consistencyProof(older.size, newer.size, w);
        ok = await consistent(older.size, older.root, newer.size, newer.root, proof);
      } catch {
        ok = false;
      }
    }
    if (ok) show(out, true, w.consistentWithOlder + " " + older.size);
    else show(out, false, w.notConsistent + " (" + out.dataset.older + " → " + out.closest("section.kept").dataset.size + ")");
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button.verify-match")) {
    button.addEventListener("click", onVerifyMatch);
  }
  const kept = document.getElementById("verify-checkpoints");
  if (kept) kept.addEventListener("click", onVerifyKept);
});

// Folio admin page: a small client of the JSON API. Everything is built with textContent (never
// innerHTML with data), requests carry the session cookie, and API errors are shown in plain words.
"use strict";

const BASE = location.pathname.replace(/admin\/?$/, "");
const REFRESH_MS = 1000;
const $ = (id) => document.getElementById(id);

let me = null;
let timer = null;
let itemsCursor = null;

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(BASE + path, init);
  } catch (e) {
    throw new ApiError(0, "unreachable", "The server cannot be reached. Check your connection and try again.");
  }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (!resp.ok) {
    const err = data && data.error ? data.error : {};
    const e = new ApiError(resp.status, err.code || "error", err.message || ("The server answered " + resp.status + "."));
    e.details = err;
    throw e;
  }
  return { status: resp.status, data };
}

function showError(prefix, e) {
  const box = $("error");
  box.textContent = prefix + ": " + (e && e.message ? e.message : String(e));
  box.hidden = false;
}

function clearMessages() {
  $("error").hidden = true;
  $("notice").hidden = true;
}

function notice(text) {
  const box = $("notice");
  box.textContent = text;
  box.hidden = false;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells, attrs) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    if (c instanceof Node) td.appendChild(c); else td.textContent = c === null || c === undefined ? "—" : String(c);
    tr.appendChild(td);
  }
  for (const [k, v] of Object.entries(attrs || {})) tr.setAttribute(k, v);
  return tr;
}

function link(text, href) {
  const a = el("a", text);
  a.href = href;
  return a;
}

function when(ts) {
  if (!ts) return "—";
  const d = new Date(ts);
  return isNaN(d) ? ts : d.toLocaleString();
}

function shortRev(rev) {
  if (!rev) return "—";
  const [n, h] = rev.split("-");
  return n + "-" + (h || "").slice(0, 8);
}

function canEdit() { return me && (me.role === "editor" || me.role === "admin"); }
function isAdmin() { return me && me.role === "admin"; }

// Pretty JSON with sorted keys, so the same value always prints the same way.
function canonical(v) {
  if (Array.isArray(v)) return v.map(canonical);
  if (v && typeof v === "object") {
    const out = {};
    for (const k of Object.keys(v).sort()) out[k] = canonical(v[k]);
    return out;
  }
  return v;
}
function pretty(v) { return JSON.stringify(canonical(v), null, 2); }

// Line diff (longest common subsequence): "-" only in `a`, "+" only in `b`.
function diffLines(a, b) {
  const x = a.split("\n"), y = b.split("\n");
  const n = x.length, m = y.length;
  if (n * m > 4000000) return [[" ", "(too large to compare line by line)"]];
  const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--)
    lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < n && j < m) {
    if (x[i] === y[j]) { out.push([" ", x[i]]); i++; j++; }
    else if (lcs[i + 1][j] >= lcs[i][j + 1]) { out.push(["-", x[i]]); i++; }
    else { out.push(["+", y[j]]); j++; }
  }
  while (i < n) out.push(["-", x[i++]]);
  while (j < m) out.push(["+", y[j++]]);
  return out;
}

function renderDiff(pre, a, b) {
  pre.textContent = "";
  for (const [mark, line] of diffLines(a, b)) {
    const span = el("span", mark + " " + line + "\n", mark === "-" ? "del" : mark === "+" ? "ins" : "same");
    pre.appendChild(span);
  }
}

// Navigation the page makes itself keeps the message it just showed.
let keepMessages = false;
function navigate(hash) {
  if (location.hash === hash) return;
  keepMessages = true;
  location.hash = hash;
}

function show(id) {
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== id;
  // The nav marks the section shown (an item belongs to its collection, a conflict to the list).
  const section = (location.hash || "#/cluster").slice(2).split("/");
  const here = section[0] === "item" ? section[1] : section[0] === "conflict" ? "conflicts" : section[0];
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.getAttribute("href") === "#/" + here) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

// Line numbers beside the content editor, kept in step with its lines and scrolling.
function numberLines() {
  const n = $("item-content").value.split("\n").length;
  let s = "";
  for (let i = 1; i <= n; i++) s += i + "\n";
  $("item-lines").textContent = s;
  $("item-lines").scrollTop = $("item-content").scrollTop;
}

// Formats the editor's JSON (sorted keys, two spaces), or says why it cannot.
function formatItem() {
  try {
    $("item-content").value = pretty(JSON.parse($("item-content").value));
    numberLines();
    clearMessages();
  } catch (e) { showError("The content is not valid JSON", e); }
}

function applyRole() {
  $("whoami").textContent = me.user + " (" + me.role + ")";
  if (!canEdit()) for (const e of document.querySelectorAll(".editor-only")) e.remove();
  if (!isAdmin()) for (const e of document.querySelectorAll(".admin-only")) e.remove();
  if (!canEdit()) {
    $("item-name").readOnly = true;
    $("item-content").readOnly = true;
  }
}

// ---- views -------------------------------------------------------------------------------

async function viewCluster() {
  const { data } = await api("GET", "api/v1/cluster");
  const dl = $("cluster-summary");
  dl.textContent = "";
  const leader = data.leader ? (data.leader.id || data.leader.url) : "none known";
  for (const [k, v] of [["Mode", data.mode], ["This server", data.me.id + " (" + data.me.role + ")"], ["Term", data.term], ["Leader", leader]]) {
    dl.appendChild(el("dt", k));
    dl.appendChild(el("dd", v));
  }
  const body = $("members").tBodies[0];
  body.textContent = "";
  const clockOff = new Map((data.clock_warnings || []).map((w) => [w.server, w]));
  for (const m of data.members) {
    const name = m.self ? m.id + " (this server)" : m.id;
    let off = null;
    const w = clockOff.get(m.id);
    if (w) {
      // Named as off: how far from the leader's clock, whichever server this page is on.
      off = el("span", (w.offset_ms > 0 ? "+" : "") + w.offset_ms + " ms from the leader's", "clock-off");
      off.title = w.message + " (cluster.clock.warn: " + data.clock_warn_ms + " ms)";
    } else if (m.clock_offset_ms !== null && m.clock_offset_ms !== undefined) {
      off = m.clock_offset_ms + " ms";
    }
    const health = el("span", m.self ? "this server: " + m.health : m.health, "health health-" + (m.self ? "self" : m.health));
    // Why calls to it fail: its refusal, or what went unanswered.
    if (m.reason) health.appendChild(el("span", m.reason, "health-reason"));
    body.appendChild(row([name, m.role, health, when(m.last_contact), m.lag, m.version, off], { "data-member-id": m.id || "" }));
  }
}

async function viewItems(coll, deleted) {
  const kind = coll === "workbooks" ? "workbooks" : "data sources";
  $("content-title").textContent = deleted ? "Deleted " + kind : kind[0].toUpperCase() + kind.slice(1);
  const toggle = $("deleted-toggle");
  toggle.textContent = deleted ? "Show current" : "Show deleted";
  toggle.href = "#/" + coll + (deleted ? "" : "/deleted");
  const { data } = await api("GET", "api/v1/" + coll + "?limit=200" + (deleted ? "&deleted=true" : ""));
  const body = $("items").tBodies[0];
  body.textContent = "";
  if (deleted) {
    if (data.items.length === 0) body.appendChild(row(["Nothing deleted.", "", "", "", ""], { class: "empty" }));
    for (const it of data.items) {
      const name = document.createElement("span");
      name.appendChild(link(it.name, "#/item/" + coll + "/" + encodeURIComponent(it.id)));
      if (canEdit()) {
        const restore = el("button", "Restore");
        restore.type = "button";
        restore.className = "restore-deleted";
        restore.addEventListener("click", () => restoreDeleted(coll, it.id, it.name));
        name.appendChild(restore);
      }
      body.appendChild(row([name, shortRev(it.rev), it.updated_by, it.origin, when(it.updated_at)], { "data-item-id": it.id }));
    }
    itemsCursor = data.next_cursor;
    $("more-items").hidden = !itemsCursor;
    return;
  }
  if (data.items.length === 0) {
    const what = coll === "workbooks" ? "workbooks" : "data sources";
    body.appendChild(row([canEdit() ? "No " + what + " yet: create one with New, or through the API." : "No " + what + " yet.", "", "", "", ""], { class: "empty" }));
  }
  for (const it of data.items) {
    const name = document.createElement("span");
    name.appendChild(link(it.name, "#/item/" + coll + "/" + encodeURIComponent(it.id)));
    if (it.state === "pending") name.appendChild(pendingMark());
    body.appendChild(row([name, shortRev(it.rev), it.updated_by, it.origin, when(it.updated_at)],
      { "data-item-id": it.id }));
  }
  itemsCursor = data.next_cursor;
  $("more-items").hidden = !itemsCursor;
}

// The item view: `item` is the revision the form was opened at (the one a save names in
// If-Match, until the user reloads or merges); `latest` is the newest revision the page has seen.
let current = null;

// Loads the item. A refresh (`keepForm`) never changes what the user typed nor the revision the
// form is based on: when the item changed underneath, an untouched form not being edited is
// reloaded, and an edited one keeps its text while an alert offers the difference, a merge or
// a reload.
async function viewItem(coll, id, keepForm) {
  let data;
  try {
    data = (await api("GET", "api/v1/" + coll + "/" + encodeURIComponent(id))).data;
  } catch (e) {
    if (e.status === 404 && await viewDeleted(coll, id)) return;
    throw e;
  }
  $("deleted-box").hidden = true;
  for (const b of ["save-item", "format-item"]) { const x = $(b); if (x) x.hidden = false; }
  if (canEdit()) { $("item-name").readOnly = false; $("item-content").readOnly = false; }
  const same = current && current.coll === coll && current.item && current.item.id === data.id;
  if (!keepForm || !same) {
    loadForm(coll, data);
  } else {
    current.latest = data;
    markPending(data);
    if (data.rev !== current.item.rev) {
      const editing = $("item-form").contains(document.activeElement);
      if (!formEdited() && !editing) loadForm(coll, data);
      else showStale(false);
    } else if (!$("stale").hidden) {
      hideStale();
    }
  }
  await viewHistory(coll, id, data);
}

// A marker for an item whose latest edit here waits to reach the leader.
function pendingMark() {
  const m = el("span", "pending", "pending");
  m.title = "Saved on this server; sent to the leader when it can be reached";
  return m;
}

// Puts a revision into the form and makes it the form's base.
function loadForm(coll, data) {
  current = { coll, item: data, latest: data };
  $("item-title").textContent = data.name;
  $("item-meta").textContent = "Revision " + data.rev + " by " + data.updated_by + " on " + data.origin + ", " + when(data.updated_at);
  markPending(data);
  $("item-name").value = data.name;
  $("item-content").value = pretty(data.content);
  numberLines();
  const del = $("delete-item"); if (del) del.hidden = false;
  hideStale();
}

// Shows on the item page whether its latest edit still waits for the leader.
function markPending(data) {
  const old = $("item-pending");
  if (old) old.remove();
  if (data.state !== "pending") return;
  const m = pendingMark();
  m.id = "item-pending";
  m.textContent = "pending: waiting for the leader";
  $("item-title").appendChild(m);
}

// The form as the user left it, or null when its content is not valid JSON.
function formValue() {
  try { return { name: $("item-name").value, content: JSON.parse($("item-content").value) }; }
  catch (e) { return null; }
}

// Whether the user changed the form since it was loaded.
function formEdited() {
  if (!current || !current.item) return false;
  const f = formValue();
  return !f || f.name !== current.item.name || pretty(f.content) !== pretty(current.item.content);
}

function hideStale() {
  $("stale").hidden = true;
  $("stale-diff").hidden = true;
  $("stale-legend").hidden = true;
}

// Says that the item changed since the form was opened (after a refused save: `refused`).
function showStale(refused) {
  const l = current.latest;
  $("stale-text").textContent = (refused ? "Not saved: this " : "This ") + (current.coll === "workbooks" ? "workbook" : "data source") +
    " changed since you opened it: revision " + shortRev(l.rev) + " by " + l.updated_by + " on " + l.origin + ", " + when(l.updated_at) +
    ". Your text is kept. See the difference, merge their change into your text, or reload (your changes are dropped).";
  $("stale").hidden = false;
}

// The difference between the newest revision ("-") and the form ("+").
function showStaleDiff() {
  const f = formValue();
  const mine = f ? pretty({ name: f.name, content: f.content }) : $("item-content").value;
  renderDiff($("stale-diff"), pretty({ name: current.latest.name, content: current.latest.content }), mine);
  $("stale-legend").textContent = "- revision " + shortRev(current.latest.rev) + " (theirs), + your text";
  $("stale-legend").hidden = false;
  $("stale-diff").hidden = false;
}

// Three-way merge of JSON values: a side that did not change from `base` takes the other's
// value; objects merge key by key; where both changed differently, `mine` is kept and the path
// is reported.
function merge3(base, mine, theirs, path, clashes) {
  const same = (a, b) => JSON.stringify(canonical(a)) === JSON.stringify(canonical(b));
  if (same(mine, theirs) || same(theirs, base)) return mine;
  if (same(mine, base)) return theirs;
  const isObj = (v) => v && typeof v === "object" && !Array.isArray(v);
  if (isObj(base) && isObj(mine) && isObj(theirs)) {
    const out = {};
    for (const k of new Set([...Object.keys(mine), ...Object.keys(theirs)])) {
      const v = merge3(base[k], mine[k], theirs[k], path + "/" + k, clashes);
      if (v !== undefined) out[k] = v;
    }
    return out;
  }
  clashes.push(path || "/");
  return mine;
}

// Merges the newest revision into the form, which is then based on it.
function mergeStale() {
  const f = formValue();
  if (!f) { showError("Cannot merge", new Error("the content is not valid JSON; fix it or reload.")); return; }
  const base = current.item, theirs = current.latest, clashes = [];
  const merged = merge3({ name: base.name, content: base.content }, f, { name: theirs.name, content: theirs.content }, "", clashes);
  current.item = theirs;
  $("item-meta").textContent = "Revision " + theirs.rev + " by " + theirs.updated_by + " on " + theirs.origin + ", " + when(theirs.updated_at) + ", merged with your changes";
  $("item-name").value = merged.name;
  $("item-content").value = pretty(merged.content);
  numberLines();
  hideStale();
  if (clashes.length) {
    showError("Merged, but both of you changed " + clashes.join(", ") + "; your values are kept there", new Error("review, then Save."));
    showStaleDiff();
  } else {
    notice("Merged revision " + shortRev(theirs.rev) + " into your text; review it, then Save.");
  }
}

async function viewHistory(coll, id, data) {
  const hist = await api("GET", "api/v1/" + coll + "/" + encodeURIComponent(id) + "/history");
  const body = $("history").tBodies[0];
  body.textContent = "";
  for (const r of hist.data.items) {
    const actions = document.createElement("span");
    const view = el("button", "Show");
    view.type = "button";
    view.addEventListener("click", () => showRevision(coll, id, r.rev));
    actions.appendChild(view);
    if (canEdit() && r.rev !== data.rev && !r.deleted) {
      const restore = el("button", "Restore");
      restore.type = "button";
      restore.addEventListener("click", () => restoreRevision(coll, id, r.rev));
      actions.appendChild(restore);
    }
    const label = shortRev(r.rev) + (r.deleted ? " (deleted)" : "") + (r.restored_from ? " (restores " + shortRev(r.restored_from) + ")" : "");
    body.appendChild(row([label, r.deleted ? "—" : r.name, r.updated_by, r.origin, when(r.updated_at), actions]));
  }
  // The revisions to compare: by default the one before the newest, against the newest.
  const live = hist.data.items.filter((r) => !r.deleted);
  for (const [sel, pick] of [["compare-a", live[1] || live[0]], ["compare-b", live[0]]]) {
    const s = $(sel);
    const keep = s.value;
    s.textContent = "";
    for (const r of live) {
      const o = el("option", shortRev(r.rev) + " · " + r.name + " · " + when(r.updated_at));
      o.value = r.rev;
      s.appendChild(o);
    }
    s.value = live.some((r) => r.rev === keep) ? keep : (pick ? pick.rev : "");
  }
}

// The page of a deleted item: its last content, read-only, and a Restore button. Answers false
// when the item has no history (it never existed here).
async function viewDeleted(coll, id) {
  let hist;
  try { hist = (await api("GET", "api/v1/" + coll + "/" + encodeURIComponent(id) + "/history")).data.items; }
  catch (e) { if (e.status === 404) return false; throw e; }
  const tomb = hist[0];
  const last = hist.find((r) => !r.deleted);
  current = { coll, item: null, deleted: { id, last } };
  $("item-title").textContent = (last ? last.name : id) + " (deleted)";
  $("item-meta").textContent = "";
  $("deleted-text").textContent = "Deleted by " + tomb.updated_by + " on " + tomb.origin + ", " + when(tomb.updated_at) +
    (last ? ". Restore it to make revision " + shortRev(last.rev) + " current again." : ".");
  $("deleted-box").hidden = false;
  const rb = $("restore-deleted"); if (rb) rb.hidden = !last;
  for (const b of ["save-item", "delete-item", "format-item"]) { const x = $(b); if (x) x.hidden = true; }
  $("item-name").readOnly = true;
  $("item-content").readOnly = true;
  $("item-name").value = last ? last.name : "";
  $("item-content").value = "";
  if (last) {
    const r = await api("GET", "api/v1/" + coll + "/" + encodeURIComponent(id) + "/history/" + last.rev);
    $("item-content").value = pretty(r.data.content);
  }
  numberLines();
  hideStale();
  await viewHistory(coll, id, tomb);
  return true;
}

// Restores a deleted item to its last content.
async function restoreDeleted(coll, id, name) {
  clearMessages();
  try {
    const hist = (await api("GET", "api/v1/" + coll + "/" + encodeURIComponent(id) + "/history")).data.items;
    const last = hist.find((r) => !r.deleted);
    if (!last) { showError("Cannot restore " + name, new Error("no earlier revision is kept.")); return; }
    const { data } = await api("POST", "api/v1/" + coll + "/" + encodeURIComponent(id) + "/history/" + last.rev + "/restore");
    notice((data.state === "pending" ? "Restored here (queued for the leader): " : "Restored ") + data.name + " as revision " + shortRev(data.rev) + ".");
    navigate("#/item/" + coll + "/" + encodeURIComponent(id));
    location.hash = "#/item/" + coll + "/" + encodeURIComponent(id);
  } catch (e) { showError("Could not restore", e); }
}

// Shows the difference between the two revisions chosen under the history.
async function compareRevisions() {
  const a = $("compare-a").value, b = $("compare-b").value;
  if (!current || !a || !b) return;
  const id = current.item ? current.item.id : current.deleted.id;
  const base = "api/v1/" + current.coll + "/" + encodeURIComponent(id) + "/history/";
  try {
    const [x, y] = await Promise.all([api("GET", base + a), api("GET", base + b)]);
    const text = (r) => pretty({ name: r.data.name, content: r.data.content });
    renderDiff($("compare-diff"), text(x), text(y));
    $("compare-legend").textContent = "- revision " + shortRev(a) + ", + revision " + shortRev(b);
    $("compare-legend").hidden = false;
    $("compare-diff").hidden = false;
  } catch (e) { showError("Could not compare", e); }
}

async function showRevision(coll, id, rev) {
  try {
    const { data } = await api("GET", "api/v1/" + coll + "/" + encodeURIComponent(id) + "/history/" + rev);
    const pre = $("revision-content");
    pre.textContent = "Revision " + rev + ":\n" + pretty(data.content);
    pre.hidden = false;
    pre.scrollIntoView({ block: "nearest" });
  } catch (e) { showError("Could not read the revision", e); }
}

async function restoreRevision(coll, id, rev) {
  clearMessages();
  try {
    const { data } = await api("POST", "api/v1/" + coll + "/" + encodeURIComponent(id) + "/history/" + rev + "/restore");
    notice(data.state === "pending" ? "Restored here; the leader cannot be reached, so the change is queued." : "Restored as revision " + data.rev + ".");
    await viewItem(coll, id);
  } catch (e) { showError("Could not restore", e); }
}

async function saveItem(ev) {
  ev.preventDefault();
  clearMessages();
  let content;
  try { content = JSON.parse($("item-content").value); }
  catch (e) { showError("The content is not valid JSON", e); return; }
  const body = { name: $("item-name").value, content };
  try {
    let res;
    if (current.item) {
      // The revision the form is based on, never a newer one: a stale form is refused (412).
      res = await fetchWithIfMatch("PUT", "api/v1/" + current.coll + "/" + encodeURIComponent(current.item.id), body, current.item.rev);
    } else {
      res = await api("POST", "api/v1/" + current.coll, body);
    }
    const d = res.data;
    notice(d.state === "pending" ? "Saved on this server; the leader cannot be reached, so the change is queued." : "Saved as revision " + d.rev + ".");
    navigate("#/item/" + current.coll + "/" + encodeURIComponent(d.id));
    await viewItem(current.coll, d.id);
  } catch (e) {
    if (e.code === "conflict") showError("Another edit reached the leader first; yours is kept as a conflict you can restore", e);
    else if (e.code === "revision_mismatch") {
      try {
        const { data } = await api("GET", "api/v1/" + current.coll + "/" + encodeURIComponent(current.item.id));
        current.latest = data;
        showStale(true);
      } catch (e2) { showError("Someone changed this item since you opened it, and it cannot be read now", e2); }
    }
    else showError("Could not save", e);
  }
}

async function fetchWithIfMatch(method, path, body, rev) {
  const resp = await fetch(BASE + path, {
    method, credentials: "same-origin",
    headers: { "content-type": "application/json", "if-match": '"' + rev + '"' },
    body: JSON.stringify(body),
  });
  const data = await resp.json().catch(() => null);
  if (!resp.ok) {
    const err = data && data.error ? data.error : {};
    const e = new ApiError(resp.status, err.code || "error", err.message || ("The server answered " + resp.status + "."));
    throw e;
  }
  return { status: resp.status, data };
}

async function deleteItem() {
  if (!current || !current.item) return;
  if (!confirm("Delete " + current.item.name + "?")) return;
  clearMessages();
  try {
    await api("DELETE", "api/v1/" + current.coll + "/" + encodeURIComponent(current.item.id));
    notice("Deleted " + current.item.name + ".");
    navigate("#/" + current.coll);
  } catch (e) { showError("Could not delete", e); }
}

function newItem() {
  const coll = location.hash.includes("datasources") ? "datasources" : "workbooks";
  current = { coll, item: null };
  $("item-title").textContent = coll === "workbooks" ? "New workbook" : "New data source";
  $("item-meta").textContent = "";
  $("item-name").value = "";
  $("item-content").value = "{}";
  numberLines();
  // Nothing to delete yet.
  const del = $("delete-item"); if (del) del.hidden = true;
  $("history").tBodies[0].textContent = "";
  show("item-view");
  $("item-name").focus();
}

async function viewConflicts() {
  const { data } = await api("GET", "api/v1/conflicts?limit=200");
  const body = $("conflicts").tBodies[0];
  body.textContent = "";
  if (data.items.length === 0) body.appendChild(row(["No conflicts: no two servers saved different edits of the same revision.", "", "", "", ""], { class: "empty" }));
  for (const c of data.items) {
    const loser = c.loser || {};
    body.appendChild(row([link(loser.name || c.item_id, "#/conflict/" + encodeURIComponent(c.id)), c.collection, loser.updated_by, loser.origin, when(c.created_at)],
      { "data-conflict-id": c.id }));
  }
}

let conflict = null;

async function viewConflict(id) {
  const { data } = await api("GET", "api/v1/conflicts/" + encodeURIComponent(id));
  conflict = data;
  const loser = data.loser || {};
  $("conflict-title").textContent = "Conflict on " + (loser.name || data.item_id);
  $("conflict-meta").textContent = "The edit by " + loser.updated_by + " on " + loser.origin + " (" + when(loser.updated_at) +
    ") lost to revision " + data.winner_rev + ".";
  const kept = loser.deleted ? "(a deletion)" : pretty({ name: loser.name, content: loser.content });
  const cur = data.current ? pretty({ name: data.current.name, content: data.current.content }) : "(deleted)";
  $("conflict-loser").textContent = kept;
  $("conflict-winner").textContent = cur;
  renderDiff($("conflict-diff"), cur, kept);
}

async function restoreConflict() {
  clearMessages();
  try {
    const { data } = await api("POST", "api/v1/conflicts/" + encodeURIComponent(conflict.id) + "/restore");
    notice("The kept edit is now current as revision " + data.rev + (data.state === "pending" ? " (queued for the leader)." : "."));
    navigate("#/conflicts");
  } catch (e) { showError("Could not restore", e); }
}

async function dismissConflict() {
  clearMessages();
  try {
    await api("DELETE", "api/v1/conflicts/" + encodeURIComponent(conflict.id));
    notice("Conflict dismissed.");
    navigate("#/conflicts");
  } catch (e) { showError("Could not dismiss", e); }
}

async function viewConfig() {
  const { data } = await api("GET", "api/v1/config");
  const body = $("config").tBodies[0];
  body.textContent = "";
  for (const r of data.items) body.appendChild(row([r.key, r.value, r.source]));
}

async function viewUsers() {
  const { data } = await api("GET", "api/v1/users?limit=1000");
  const body = $("users").tBodies[0];
  body.textContent = "";
  for (const u of data.items) {
    const select = document.createElement("select");
    select.setAttribute("aria-label", "Role of " + u.username);
    for (const r of ["viewer", "editor", "admin"]) {
      const o = el("option", r);
      o.value = r;
      o.selected = r === u.role;
      select.appendChild(o);
    }
    select.addEventListener("change", async () => {
      clearMessages();
      try { await api("PUT", "api/v1/users/" + encodeURIComponent(u.username), { role: select.value }); notice(u.username + " is now " + select.value + "."); }
      catch (e) { showError("Could not change the role", e); select.value = u.role; }
    });
    const del = el("button", "Delete");
    del.type = "button";
    del.setAttribute("aria-label", "Delete " + u.username);
    del.addEventListener("click", async () => {
      if (!confirm("Delete user " + u.username + "?")) return;
      clearMessages();
      try { await api("DELETE", "api/v1/users/" + encodeURIComponent(u.username)); notice("Deleted " + u.username + "."); await viewUsers(); }
      catch (e) { showError("Could not delete the user", e); }
    });
    const actions = document.createElement("span");
    actions.appendChild(del);
    const reset = el("button", "Set password");
    reset.type = "button";
    reset.className = "set-password";
    reset.setAttribute("aria-label", "Set the password of " + u.username);
    reset.addEventListener("click", () => {
      reset.hidden = true;
      const input = document.createElement("input");
      input.type = "password";
      input.autocomplete = "new-password";
      input.minLength = 8;
      input.className = "new-user-password";
      input.setAttribute("aria-label", "New password for " + u.username);
      const save = el("button", "Save password");
      save.type = "button";
      save.className = "save-user-password";
      save.addEventListener("click", async () => {
        clearMessages();
        try {
          await api("PUT", "api/v1/users/" + encodeURIComponent(u.username), { password: input.value });
          notice("The password of " + u.username + " is set; tell them, and they can change it on their Password page.");
          await viewUsers();
        } catch (e) { showError("Could not set the password", e); }
      });
      actions.append(input, save);
      input.focus();
    });
    actions.appendChild(reset);
    body.appendChild(row([u.username, select, actions], { "data-user": u.username }));
  }
}

async function addUser(ev) {
  ev.preventDefault();
  clearMessages();
  try {
    await api("POST", "api/v1/users", { username: $("new-username").value, password: $("new-password").value, role: $("new-role").value });
    notice("Added " + $("new-username").value + ".");
    $("user-form").reset();
    await viewUsers();
  } catch (e) { showError("Could not add the user", e); }
}

// ---- routing -----------------------------------------------------------------------------

async function route(refreshOnly) {
  if (!me) return;
  const parts = (location.hash || "#/cluster").slice(2).split("/").map(decodeURIComponent);
  try {
    switch (parts[0]) {
      case "workbooks": case "datasources":
        if (!refreshOnly) show("content-view");
        await viewItems(parts[0], parts[1] === "deleted");
        break;
      case "item":
        if (!refreshOnly) show("item-view");
        await viewItem(parts[1], parts[2], refreshOnly);
        break;
      case "conflicts":
        if (!refreshOnly) show("conflicts-view");
        await viewConflicts();
        break;
      case "conflict":
        if (!refreshOnly) { show("conflict-view"); await viewConflict(parts[1]); }
        break;
      case "config":
        if (!refreshOnly) { show("config-view"); await viewConfig(); }
        break;
      case "users":
        if (!refreshOnly) { show("users-view"); await viewUsers(); }
        break;
      case "password":
        if (!refreshOnly) show("password-view");
        break;
      default:
        if (!refreshOnly) show("cluster-view");
        await viewCluster();
    }
    await checkLeader();
    if (refreshOnly) {
      $("error").dataset.stale = "";
      document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
    }
  } catch (e) {
    if (e.status === 401) { loggedOut(); return; }
    showError(refreshOnly ? "Refreshing failed" : "Could not load this page", e);
  }
}

// Whether the last check found this server unable to commit (its leader unreachable).
let leaderDown = false;

// Says on every page when this server cannot reach its leader or cannot commit, and once more
// when it can again.
async function checkLeader() {
  let h;
  try { h = (await api("GET", "health")).data; } catch (e) { return; }
  // Which server this page belongs to, and its role, in the header and the tab's title.
  const badge = $("server-badge");
  badge.textContent = h.server + " · " + h.role;
  badge.hidden = false;
  document.title = "Folio · " + h.server;
  // A full data volume: saves are refused until space is freed there.
  const st = h.storage || {};
  const full = $("storage-alert");
  if (st.writable === false) {
    const mib = (b) => (b / 1048576).toFixed(1) + " MiB";
    full.textContent = "The data volume of this server (" + h.server + ") is full: " + mib(st.free_bytes) +
      " free in " + st.data_dir + ", less than the " + mib(st.min_free_bytes) +
      " it keeps free. Saves are refused until space is freed there; reading works.";
    full.hidden = false;
  } else {
    full.hidden = true;
  }
  // Clocks further from the leader's than cluster.clock.warn, each named with its offset.
  const clocks = $("clock-alert");
  const warnings = h.clock_warnings || [];
  clocks.textContent = warnings.map((w) => w.message + ".").join(" ");
  clocks.hidden = warnings.length === 0;
  const lost = h.role === "follower" ? h.leader_reachable === false : h.can_commit === false;
  const box = $("leader-alert");
  const leader = h.leader ? (h.leader.id || h.leader.url) : null;
  if (lost) {
    box.textContent = h.role !== "follower"
      ? "This server (" + h.server + ") leads but sees too few members to commit. Saves made here are kept and queued (answered as pending) until enough members are back."
      : h.leader_health === "refusing"
      ? "The leader " + (leader || "(none known)") + " answers but refuses this server (" + h.server + "): " +
        h.leader_error + ". Saves made here are kept and queued (answered as pending) and are sent to the leader once it accepts them."
      : "This server (" + h.server + ") cannot reach its leader " + (leader || "(none known)") +
        (h.leader_last_contact ? ", last heard " + when(h.leader_last_contact) : ", not heard yet") +
        ". Saves made here are kept and queued (answered as pending) and are sent to the leader when it is back.";
    box.hidden = false;
    leaderDown = true;
  } else {
    box.hidden = true;
    if (leaderDown) notice(h.role === "follower"
      ? "The leader " + leader + " is reachable again; queued saves are being sent."
      : "Enough members are back; saves are committed again.");
    leaderDown = false;
  }
}

function loggedOut() {
  me = null;
  clearInterval(timer);
  $("nav").hidden = true;
  show("login-view");
  $("username").focus();
}

async function loggedIn(who) {
  me = who;
  if (me.bootstrap_password === undefined) {
    try { me.bootstrap_password = (await api("GET", "api/v1/me")).data.bootstrap_password; }
    catch (e) { me.bootstrap_password = false; }
  }
  $("bootstrap-warning").hidden = !me.bootstrap_password;
  applyRole();
  $("nav").hidden = false;
  await route(false);
  clearInterval(timer);
  timer = setInterval(() => route(true), REFRESH_MS);
}

async function login(ev) {
  ev.preventDefault();
  clearMessages();
  try {
    const { data } = await api("POST", "api/v1/login", { username: $("username").value, password: $("password").value });
    $("password").value = "";
    await loggedIn({ user: data.user, role: data.role });
  } catch (e) {
    if (e.code === "invalid_credentials") showError("Login failed", new Error("wrong user name or password."));
    else showError("Login failed", e);
  }
}

async function logout() {
  try { await api("POST", "api/v1/logout"); } catch (e) { /* the session is gone either way */ }
  // The next user starts from the first page, not from the one this user left open.
  history.replaceState(null, "", location.pathname + location.search);
  location.reload();
}

async function changePassword(ev) {
  ev.preventDefault();
  clearMessages();
  const next = $("new-password-1").value;
  if (next !== $("new-password-2").value) {
    showError("Password not changed", new Error("the two new passwords differ."));
    return;
  }
  try {
    const { data } = await api("PUT", "api/v1/me/password", { current_password: $("current-password").value, new_password: next });
    for (const id of ["current-password", "new-password-1", "new-password-2"]) $(id).value = "";
    me.bootstrap_password = false;
    $("bootstrap-warning").hidden = true;
    notice("Password changed" + (data.sessions_ended ? "; " + data.sessions_ended + " other session(s) ended." : "."));
  } catch (e) {
    if (e.code === "wrong_password") showError("Password not changed", new Error("the current password is not right."));
    else showError("Password not changed", e);
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("item-form").addEventListener("submit", saveItem);
  $("item-content").addEventListener("input", numberLines);
  $("item-content").addEventListener("scroll", () => { $("item-lines").scrollTop = $("item-content").scrollTop; });
  $("format-item").addEventListener("click", formatItem);
  $("compare").addEventListener("click", compareRevisions);
  const rd = $("restore-deleted");
  if (rd) rd.addEventListener("click", () => restoreDeleted(current.coll, current.deleted.id, $("item-name").value));
  $("stale-show").addEventListener("click", showStaleDiff);
  $("stale-merge").addEventListener("click", mergeStale);
  $("stale-reload").addEventListener("click", () => { clearMessages(); loadForm(current.coll, current.latest); });
  const del = $("delete-item"); if (del) del.addEventListener("click", deleteItem);
  const nw = $("new-item"); if (nw) nw.addEventListener("click", newItem);
  $("restore-conflict").addEventListener("click", restoreConflict);
  $("dismiss-conflict").addEventListener("click", dismissConflict);
  $("user-form").addEventListener("submit", addUser);
  $("password-form").addEventListener("submit", changePassword);
  $("more-items").addEventListener("click", () => notice("Showing the first 200 items; use the API with ?cursor= for more."));
  window.addEventListener("hashchange", () => {
    if (!keepMessages) clearMessages();
    keepMessages = false;
    route(false);
  });
  try {
    const { data } = await api("GET", "api/v1/me");
    await loggedIn(data);
  } catch (e) {
    if (e.status !== 401) showError("The server cannot be reached", e);
    loggedOut();
  }
});

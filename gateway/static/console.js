// tiphub console: one page, a screen per role, calling only the gateway's API as the signed-in caller.
//
// No credential is held here: the session is an HttpOnly cookie the page never reads. Nothing personal goes
// into the address bar or the browser's storage: routes name a screen and an opaque id (a signal, a summary),
// filters live in memory, and every value from the API is written as text (never parsed as HTML).
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const view = () => $("#view");

/** An element: h("td", {class: "x"}, "text", child, ...). Strings become text nodes, never markup. */
function h(tag, attrs = {}, ...children) {
  const node = document.createElementNS(
    ["svg", "g", "circle", "line", "rect", "text", "title"].includes(tag) ? "http://www.w3.org/2000/svg" : "http://www.w3.org/1999/xhtml",
    tag,
  );
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function say(message, error = false) {
  const status = $("#status");
  status.textContent = message;
  status.classList.toggle("error", error);
}

class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

/** Call the API as the session's caller. A change carries the console's header (the gateway's CSRF rule). */
async function api(path, { method = "GET", body, accept } = {}) {
  const headers = { "X-Tiphub-Console": "1" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (accept) headers.Accept = accept;
  const response = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const detail = data && data.detail !== undefined ? (typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail)) : response.statusText;
    if (response.status === 401 && path !== "/v1/session") signedOut("Your session has ended: sign in again.");
    throw new ApiError(response.status, detail);
  }
  return data;
}

/** Every page of a cursor feed (`next`), up to `most` items. */
async function allPages(path, key, most = 5000, limit = 500) {
  const items = [];
  let after = "";
  for (;;) {
    const page = await api(`${path}${path.includes("?") ? "&" : "?"}limit=${limit}${after ? `&after=${encodeURIComponent(after)}` : ""}`);
    items.push(...page[key]);
    if (!page[key].length || items.length >= most || page.next === after) break;
    after = page.next;
  }
  return items;
}

const fmt = {
  list: (values) => (values === null || values === undefined ? "withheld" : values.join(", ")),
  when: (value) => (value ? String(value).replace("T", " ").replace(/:\d\d(\.\d+)?Z$/, "Z") : "withheld"),
  value: (value) => (value === null || value === undefined ? "withheld" : Array.isArray(value) ? value.join(", ") : String(value)),
};

// -- session --------------------------------------------------------------------------------------
let me = null;
const NAV = {
  analyst: [["#/signals", "Signals"], ["#/queue", "Drafts"]],
  releasing_officer: [["#/queue", "Release queue"]],
  liaison: [["#/released", "Released summaries"]],
  auditor: [["#/audit", "Audit trail"]],
  publisher: [["#/submissions", "Submissions"]],
};

async function start() {
  $("#signout").addEventListener("click", signOut);
  $("#token-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = $("#token").value.trim();
    $("#token").value = "";
    await signIn({ token });
  });
  if (await signinLink()) return;
  try {
    me = await api("/v1/session");
    signedIn();
  } catch (error) {
    signedOut(error.status === 401 ? "" : error.message);
  }
}

/** A sign-in link (`#signin=TOKEN`), opened in a new tab or pasted into this one: its one-time token leaves the
 * address bar before anything else, then opens a session (whoever was signed in here before). */
async function signinLink() {
  const fragment = new URLSearchParams(location.hash.startsWith("#signin=") ? location.hash.slice(1) : "");
  if (!fragment.get("signin")) return false;
  history.replaceState(null, "", "/");
  // A link from anywhere must not quietly swap the person signed in here for someone else.
  if (me && !window.confirm(`You are signed in as ${me.subject} (${me.role.replace("_", " ")}, ${me.agency || me.partner}). Sign out and open the link's session instead?`)) {
    say("The sign-in link was not used: you are still signed in as before.");
    location.hash = NAV[me.role][0][0];
    return true;
  }
  await signIn({ signin: fragment.get("signin") });
  return true;
}

async function signIn(body) {
  try {
    me = await api("/v1/session", { method: "POST", body });
    say("");
    location.hash = "";
    signedIn();
  } catch (error) {
    signedOut(`Sign-in refused: ${error.detail || error.message}`);
  }
}

async function signOut() {
  try {
    await api("/v1/session", { method: "DELETE" });
  } catch (error) {
    /* signed out already */
  }
  signedOut("Signed out.");
}

function signedOut(message = "") {
  me = null;
  live.stop();
  $("#signin").hidden = false;
  $("#signout").hidden = true;
  $("#who").textContent = "";
  $("#nav").replaceChildren();
  view().replaceChildren();
  if (message) say(message, message.startsWith("Sign-in refused") || message.startsWith("Your session"));
  api("/v1/session/oidc")
    .then((oidc) => { $("#oidc-row").hidden = !(oidc && oidc.enabled); })
    .catch(() => { $("#oidc-row").hidden = true; });
}

function signedIn() {
  $("#signin").hidden = true;
  $("#signout").hidden = false;
  $("#who").textContent = `${me.subject} · ${me.role.replace("_", " ")} · ${me.agency || me.partner}`;
  $("#nav").replaceChildren(...(NAV[me.role] || []).map(([href, label]) => h("a", { href }, label)));
  if (!location.hash || location.hash === "#") location.hash = NAV[me.role][0][0];
  else route();
}

// -- routing: a screen and an opaque id, nothing else ------------------------------------------------
const ROUTES = [
  [/^#\/signals$/, () => signalsScreen()],
  [/^#\/signal\/([\w-]+)$/, (id) => signalScreen(id)],
  [/^#\/queue$/, () => queueScreen()],
  [/^#\/summary\/([\w-]+)$/, (id) => summaryScreen(id)],
  [/^#\/released$/, () => releasedScreen()],
  [/^#\/audit$/, () => auditScreen()],
  [/^#\/submissions$/, () => submissionsScreen()],
];

async function route() {
  if (await signinLink()) return;
  if (!me) return;
  for (const link of $("#nav").querySelectorAll("a")) {
    link.toggleAttribute("aria-current", location.hash.startsWith(link.getAttribute("href")));
    if (link.hasAttribute("aria-current")) link.setAttribute("aria-current", "page");
  }
  for (const [pattern, screen] of ROUTES) {
    const match = location.hash.match(pattern);
    if (match) {
      try {
        await screen(...match.slice(1));
        $("#main").focus({ preventScroll: true });
      } catch (error) {
        view().replaceChildren(h("section", { class: "panel" }, h("p", { class: "broken" }, error.message)));
      }
      return;
    }
  }
  location.hash = NAV[me.role][0][0];
}
window.addEventListener("hashchange", route);

// -- analyst: live signals ----------------------------------------------------------------------------
const live = {
  signals: new Map(), // signal_id -> its latest version as this caller may see it
  source: null,
  listeners: new Set(),
  start() {
    if (this.source) return;
    this.source = new EventSource("/v1/signals/stream"); // the session cookie goes with it; resumes by Last-Event-ID
    this.source.addEventListener("signal", (event) => {
      const signal = JSON.parse(event.data);
      const held = this.signals.get(signal.signal_id);
      if (!held || held.version <= signal.version) this.signals.set(signal.signal_id, signal);
      this.state("live");
      this.changed();
    });
    this.source.onopen = () => this.state("live");
    this.source.onerror = () => this.state("reconnecting");
  },
  stop() {
    if (this.source) this.source.close();
    this.source = null;
    this.signals.clear();
  },
  status: "connecting",
  state(text) {
    this.status = text;
    const node = $("#live-state");
    if (node) node.textContent = text;
  },
  pending: false,
  changed() {
    if (this.pending) return;
    this.pending = true;
    setTimeout(() => {
      this.pending = false;
      for (const listener of this.listeners) listener();
    }, 250);
  },
};

const filters = { requirement: "", agency: "", element: "", status: "open", minor: false, triage: "", from: "", to: "", search: "" };

function matches(signal) {
  const f = filters;
  if (f.requirement && signal.requirement_id !== f.requirement) return false;
  if (f.agency && !(signal.agencies || []).includes(f.agency)) return false;
  if (f.element && !(signal.elements || []).includes(f.element)) return false;
  if (f.status && signal.status !== f.status) return false;
  if (f.minor && signal.minor_involved !== true) return false;
  if (f.triage && (signal.triage_state || "new") !== f.triage) return false;
  if (f.from && (!signal.last_seen || signal.last_seen.slice(0, 10) < f.from)) return false;
  if (f.to && (!signal.first_seen || signal.first_seen.slice(0, 10) > f.to)) return false;
  if (f.search && !`${signal.signal_id} ${signal.entity || ""}`.includes(f.search.trim())) return false;
  return true;
}

function choices(values, all) {
  return [h("option", { value: "" }, all), ...[...values].sort().map((v) => h("option", { value: v }, v))];
}

async function signalsScreen() {
  live.start();
  const table = h("tbody");
  const count = h("span", { class: "muted" });
  const options = { requirement: new Set(), agency: new Set(), element: new Set() };
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter signals" });
  const field = (label, control) => h("label", {}, label, control);
  const selects = {
    requirement: h("select", { name: "requirement" }),
    agency: h("select", { name: "agency" }),
    element: h("select", { name: "element" }),
  };
  const status = h("select", { name: "status" }, ...["", "open", "closed", "merged"].map((s) => h("option", { value: s }, s || "any status")));
  const triage = h("select", { name: "triage" }, ...["", "new", "triaged", "actioned", "closed"].map((s) => h("option", { value: s }, s || "any triage")));
  const minor = h("input", { type: "checkbox", name: "minor" });
  const from = h("input", { type: "date", name: "from" });
  const to = h("input", { type: "date", name: "to" });
  const search = h("input", { type: "search", name: "search", placeholder: "sig-… or ent-…" });
  form.append(
    field("Requirement", selects.requirement),
    field("Agency", selects.agency),
    field("Element", selects.element),
    field("Status", status),
    field("Triage", triage),
    h("label", { class: "check" }, "Minor involved", minor),
    field("Seen from", from),
    field("Seen to", to),
    field("Signal or entity", search),
  );
  status.value = filters.status;
  form.addEventListener("input", () => {
    Object.assign(filters, {
      requirement: selects.requirement.value, agency: selects.agency.value, element: selects.element.value,
      status: status.value, triage: triage.value, minor: minor.checked, from: from.value, to: to.value, search: search.value,
    });
    render();
  });
  form.addEventListener("submit", (event) => event.preventDefault());

  function refreshOptions() {
    let grew = false;
    for (const signal of live.signals.values()) {
      for (const [key, values] of [["requirement", [signal.requirement_id]], ["agency", signal.agencies || []], ["element", signal.elements || []]]) {
        for (const value of values) if (!options[key].has(value)) { options[key].add(value); grew = true; }
      }
    }
    if (!grew) return;
    for (const key of Object.keys(selects)) {
      const chosen = selects[key].value;
      selects[key].replaceChildren(...choices(options[key], `any ${key}`));
      selects[key].value = chosen;
    }
  }

  const rows = new Map(); // signal_id -> its row, updated in place (a live feed must not steal focus or clicks)
  function rowOf(s) {
    let tr = rows.get(s.signal_id);
    if (!tr) {
      tr = h("tr", { class: "signal", dataset: { signal: s.signal_id } });
      rows.set(s.signal_id, tr);
    }
    const key = `${s.version}|${s.status}|${s.triage_state}`;
    if (tr.dataset.key !== key) {
      tr.dataset.key = key;
      // The cell with the link stays the same node: a reader whose focus is on it keeps it as the signal moves on.
      const first = tr.firstElementChild || h("td", {}, h("a", { href: `#/signal/${s.signal_id}` }, s.signal_id));
      tr.replaceChildren(
        first,
        h("td", {}, s.requirement_id),
        h("td", { class: s.status }, s.status),
        h("td", {}, s.triage_state || "new"),
        h("td", {}, String(s.report_count)),
        h("td", {}, fmt.list(s.agencies)),
        h("td", {}, fmt.list(s.act_means_purpose), s.minor_involved ? h("span", { class: "tag minor" }, "minor") : null),
        h("td", {}, s.score === null || s.score === undefined ? "withheld" : s.score.toFixed(2)),
        h("td", {}, fmt.when(s.last_seen)),
      );
    }
    return tr;
  }

  function render() {
    refreshOptions();
    const shown = [...live.signals.values()].filter(matches).sort((a, b) => (b.updated_at || "").localeCompare(a.updated_at || "") || a.signal_id.localeCompare(b.signal_id));
    count.textContent = `${shown.length} of ${live.signals.size} signals`;
    const wanted = shown.slice(0, 300).map(rowOf);
    const current = [...table.children];
    if (wanted.length !== current.length || wanted.some((row, i) => row !== current[i])) {
      if (table.contains(document.activeElement)) return; // the reader is in the table: reorder once they leave
      table.replaceChildren(...wanted);
    }
  }
  table.addEventListener("focusout", () => live.changed());
  live.listeners.clear();
  live.listeners.add(render);

  const coverage = h("tbody");
  const loadCoverage = async () => {
    try {
      const rows = (await api("/v1/coverage")).requirements;
      const top = Math.max(1, ...rows.map((r) => r.open_signals));
      coverage.replaceChildren(...rows.map((r) =>
        h("tr", { class: "coverage" },
          h("th", { scope: "row", title: r.question }, r.requirement_id),
          h("td", {}, h("svg", { width: 120, height: 14, role: "img", "aria-label": `${r.open_signals} open` },
            h("rect", { class: "bar", x: 0, y: 2, height: 10, width: Math.max(2, (118 * r.open_signals) / top), fill: "#1f5fbf" }))),
          h("td", {}, `${r.open_signals} open`),
          h("td", {}, `${r.reports_considered} reports`),
          h("td", {}, `${r.agencies_reporting.length} agencies`),
        )));
    } catch (error) {
      coverage.replaceChildren(h("tr", {}, h("td", {}, "coverage appears once the correlator has published it")));
    }
  };
  view().replaceChildren(
    h("div", { class: "grid" },
      h("section", { class: "panel", "aria-labelledby": "signals-title" },
        h("h2", { id: "signals-title" }, "Signals ", h("span", { id: "live-state", class: "muted" }, "connecting"), " ", count),
        form,
        h("div", { class: "scroll", tabindex: 0, role: "region", "aria-label": "Signals, scrollable" },
          h("table", {},
            h("thead", {}, h("tr", {}, ...["Signal", "Req.", "Status", "Triage", "Reports", "Agencies", "Act · means · purpose", "Score", "Last seen"].map((t) => h("th", { scope: "col" }, t)))),
            table))),
      h("section", { class: "panel", "aria-labelledby": "coverage-title" },
        h("h2", { id: "coverage-title" }, "Collection Plan coverage"),
        h("table", {}, coverage))),
  );
  live.state(live.source && live.source.readyState === 1 ? "live" : live.status);
  render();
  await loadCoverage();
}

// -- analyst: one signal ----------------------------------------------------------------------------
async function signalScreen(id) {
  const s = await api(`/v1/signals/${encodeURIComponent(id)}`);
  const reports = [...s.reports].sort((a, b) => String(a.observed_at || "").localeCompare(String(b.observed_at || "")));
  const facts = h("dl", { class: "facts" },
    ...[["Requirement", s.requirement_id], ["Status", s.status], ["Entity", s.entity], ["Version", s.version],
      ["Agencies", fmt.list(s.agencies)], ["Elements", fmt.list(s.elements)], ["Act · means · purpose", fmt.list(s.act_means_purpose)],
      ["Minor involved", s.minor_involved === null ? "withheld" : s.minor_involved ? "yes" : "no"],
      ["Score", s.score === null ? "withheld" : s.score.toFixed(3)], ["First seen", fmt.when(s.first_seen)], ["Last seen", fmt.when(s.last_seen)]]
      .flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))]));
  const timeline = h("ol", { class: "timeline", "aria-label": "Timeline of the reports" },
    ...reports.map((r) => h("li", {}, h("b", {}, fmt.when(r.observed_at)), ` · ${r.source_agency || "agency withheld"} · ${r.indicator_type || "type withheld"} · `, fmt.list(r.elements))));
  const reportRows = reports.map((r) =>
    h("tr", {},
      h("td", {}, h("code", {}, r.report_id)),
      h("td", {}, r.source_agency || "withheld"),
      h("td", {}, r.indicator_type || "withheld"),
      h("td", {}, h("details", {}, h("summary", {}, `${r.field_decisions.length} fields shared`),
        h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Field"), h("th", {}, "Rule"), h("th", {}, "Clause"))),
          h("tbody", {}, ...r.field_decisions.map((f) => h("tr", {}, h("td", {}, f.path), h("td", { class: `rule-${f.rule}` }, f.rule), h("td", {}, f.basis)))))))));

  // Triage: the agency's own state and notes for its own signal.
  const triageState = h("select", { id: "triage-state", name: "state" }, ...["new", "triaged", "actioned", "closed"].map((v) => h("option", { value: v }, v)));
  triageState.value = s.triage_state || (s.triage.length ? s.triage[s.triage.length - 1].state : "new");
  const note = h("textarea", { id: "triage-note", name: "note", maxlength: 2000 });
  const history = h("ul", { class: "triage-history" }, ...s.triage.map(triageItem));
  const triageForm = h("form", { class: "triage", "aria-label": "Triage" },
    h("div", { class: "field" }, h("label", { for: "triage-state" }, "State")), triageState,
    h("div", { class: "field" }, h("label", { for: "triage-note" }, "Note (sealed; shown to your agency's analysts)")), note,
    h("button", { type: "submit" }, "Save triage"));
  triageForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const saved = await api(`/v1/signals/${encodeURIComponent(id)}/triage`, { method: "POST", body: { state: triageState.value, note: note.value } });
      history.replaceChildren(...saved.triage.map(triageItem));
      note.value = "";
      say(`Triage saved: ${triageState.value}.`);
    } catch (error) {
      say(`Triage refused: ${error.detail}`, true);
    }
  });

  // Draft a summary for a partner: exactly what the partner would receive, field by field.
  const partner = h("select", { id: "partner", name: "partner" });
  const preview = h("div", { id: "partner-view" });
  try {
    partner.replaceChildren(...(await api("/v1/partners")).partners.map((p) => h("option", { value: p }, p)));
  } catch (error) {
    partner.replaceChildren();
  }
  const draftForm = h("form", { "aria-label": "Draft a summary" },
    h("div", { class: "field" }, h("label", { for: "partner" }, "Partner")), partner, " ",
    h("button", { type: "submit" }, "Show what the partner would receive"));
  draftForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = partner.value;
    const found = await api(`/v1/signals/${encodeURIComponent(id)}/partners/${encodeURIComponent(chosen)}`);
    if (!found.partner_signals.length) {
      preview.replaceChildren(h("p", { class: "muted" }, `Nothing of this signal may go to ${chosen}: no report of it is shared with them.`));
      return;
    }
    preview.replaceChildren(...found.partner_signals.map((candidate) => {
      const button = h("button", { type: "button", class: "draft" }, `Draft this summary for ${chosen}`);
      button.addEventListener("click", async () => {
        try {
          const summary = await api("/v1/summaries", { method: "POST", body: { signal_id: id, partner: chosen, partner_signal: candidate.partner_signal } });
          say(`Drafted ${summary.summary_id} for ${chosen}: awaiting ${summary.consents_required.length ? "consent and " : ""}approval.`);
          button.replaceWith(h("a", { href: `#/summary/${summary.summary_id}`, class: "drafted" }, `Drafted: ${summary.summary_id}`));
        } catch (error) {
          say(`Draft refused: ${error.detail}`, true);
        }
      });
      return h("div", { class: "candidate" },
        h("h3", {}, `${chosen} would receive (their signal ${candidate.partner_signal}, ${candidate.shared_reports.length} of your reports)`),
        fieldTable(candidate.fields), button);
    }));
  });

  view().replaceChildren(
    h("p", {}, h("a", { href: "#/signals" }, "← all signals")),
    h("div", { class: "grid" },
      h("div", {},
        h("section", { class: "panel", "aria-labelledby": "signal-title" }, h("h2", { id: "signal-title" }, "Signal ", h("span", { class: "id" }, s.signal_id)), facts),
        h("section", { class: "panel" }, h("h2", {}, "Entity graph"), graph(s, reports)),
        h("section", { class: "panel" }, h("h2", {}, "Reports as you may see them"),
          h("table", {}, h("thead", {}, h("tr", {}, ...["Report", "Agency", "Type", "Decided view"].map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, reportRows)))),
      h("div", {},
        h("section", { class: "panel" }, h("h2", {}, "Timeline"), timeline),
        h("section", { class: "panel" }, h("h2", {}, "Triage"), triageForm, h("h3", {}, "History"), history),
        h("section", { class: "panel" }, h("h2", {}, "Draft a summary for a partner"), draftForm, preview))),
  );
}

function triageItem(event) {
  return h("li", {}, h("b", {}, event.state), ` · ${fmt.when(event.at)} · ${event.actor}`, event.note ? h("div", {}, event.note) : null);
}

function fieldTable(fields) {
  return h("table", { class: "fields" },
    h("thead", {}, h("tr", {}, ...["Field", "Value", "Rule", "Clause"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, ...fields.map((f) =>
      h("tr", { dataset: { field: f.field } }, h("td", {}, f.field), h("td", {}, fmt.value(f.value)),
        h("td", { class: `rule-${f.rule}` }, f.rule), h("td", {}, f.basis.join("; "))))));
}

/** The entity and what connects its reports: documents, contact points and organisations, each named by
 * its kind and a number (never its value), linked to the reports that carry it. */
function graph(signal, reports) {
  const points = new Map(); // kind|issuer|value -> {label, reports:Set}
  reports.forEach((r) => {
    const view = r.view || {};
    for (const subject of view.subjects || []) {
      for (const id of subject.identifiers || []) {
        if (!id.kind) continue;
        const key = `${id.kind}|${id.issuer || ""}|${id.value || `#${r.report_id}`}`;
        if (!points.has(key)) points.set(key, { label: `${id.kind.toLowerCase()} ${id.issuer || ""}`.trim(), reports: new Set() });
        points.get(key).reports.add(r.report_id);
      }
    }
    for (const org of view.organisations || []) {
      const key = `ORG|${org.name || org.registration || r.report_id}`;
      if (!points.has(key)) points.set(key, { label: `organisation ${org.role ? org.role.toLowerCase() : ""}`.trim(), reports: new Set() });
      points.get(key).reports.add(r.report_id);
    }
  });
  const shared = [...points.values()].filter((p) => p.reports.size > 1);
  const single = [...points.values()].filter((p) => p.reports.size === 1);
  const nodes = [...shared, ...single].slice(0, 24);
  nodes.forEach((node, i) => { node.label = `${node.label} ${i + 1}`; });
  const width = 620, height = 340, cx = width / 2, cy = height / 2;
  const position = new Map();
  reports.forEach((r, i) => {
    const angle = (2 * Math.PI * i) / Math.max(1, reports.length) - Math.PI / 2;
    position.set(r.report_id, [cx + Math.cos(angle) * 110, cy + Math.sin(angle) * 110]);
  });
  nodes.forEach((node, i) => {
    const angle = (2 * Math.PI * i) / Math.max(1, nodes.length) - Math.PI / 2 + 0.3;
    node.at = [cx + Math.cos(angle) * 155, cy + Math.sin(angle) * 150];
  });
  const svg = h("svg", { id: "graph", viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img",
    "aria-label": `Entity ${signal.entity}: ${reports.length} reports, ${shared.length} documents, contact points or organisations shared between them` });
  for (const r of reports) svg.append(h("line", { x1: cx, y1: cy, x2: position.get(r.report_id)[0], y2: position.get(r.report_id)[1], stroke: "#718096" }));
  for (const node of nodes) {
    for (const rid of node.reports) {
      const [x, y] = position.get(rid);
      svg.append(h("line", { x1: node.at[0], y1: node.at[1], x2: x, y2: y, stroke: node.reports.size > 1 ? "#b7471b" : "#718096", "stroke-width": node.reports.size > 1 ? 2 : 1 }));
    }
  }
  svg.append(h("g", { class: "entity" }, h("circle", { cx, cy, r: 16, fill: "#1d2a44" }, h("title", {}, `entity ${signal.entity}`)),
    h("text", { x: cx, y: cy + 30, "text-anchor": "middle" }, signal.entity)));
  for (const r of reports) {
    const [x, y] = position.get(r.report_id);
    svg.append(h("g", { class: "report" }, h("circle", { cx: x, cy: y, r: 9, fill: "#a35f00" }, h("title", {}, `report ${r.report_id}`)),
      h("text", { x: x + 12, y: y + 4 }, `${r.source_agency || "?"} ${r.indicator_type || ""}`)));
  }
  for (const node of nodes) {
    svg.append(h("g", { class: node.reports.size > 1 ? "point shared" : "point" },
      h("rect", { x: node.at[0] - 5, y: node.at[1] - 5, width: 10, height: 10, fill: node.reports.size > 1 ? "#b7471b" : "#4a5568" }),
      h("text", { x: node.at[0] + 8, y: node.at[1] + 4 }, node.label)));
  }
  return svg;
}

// -- release: drafts, consent, approval ---------------------------------------------------------------
async function queueScreen() {
  const { summaries } = await api("/v1/summaries");
  const rows = summaries.map((s) =>
    h("tr", { class: "summary", dataset: { summary: s.summary_id } },
      h("td", {}, h("a", { href: `#/summary/${s.summary_id}` }, s.summary_id)),
      h("td", {}, s.partner), h("td", { class: s.status }, s.status),
      h("td", {}, s.drafted_by || "another agency's analyst"),
      h("td", {}, s.consents_required ? `${s.consents.length} of ${s.consents_required.length}` : s.consented ? "you consented" : s.consent_required ? "yours needed" : "—"),
      h("td", {}, s.approved_by || "not yet")));
  view().replaceChildren(h("section", { class: "panel", "aria-labelledby": "queue-title" },
    h("h2", { id: "queue-title" }, me.role === "analyst" ? "Your agency's drafts" : "Drafts awaiting consent or approval"),
    rows.length
      ? h("table", {}, h("thead", {}, h("tr", {}, ...["Summary", "Partner", "Status", "Drafted by", "Consents", "Approved by"].map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows))
      : h("p", { class: "muted" }, "Nothing awaits you.")));
}

async function summaryScreen(id) {
  const s = await api(`/v1/summaries/${encodeURIComponent(id)}`);
  const actions = h("div", { class: "actions" });
  const act = (label, path) => {
    const button = h("button", { type: "button", class: label.toLowerCase() }, label);
    button.addEventListener("click", async () => {
      try {
        const now = await api(`/v1/summaries/${encodeURIComponent(id)}/${path}`, { method: "POST" });
        say(`${label}: ${id} is ${now.status}.`);
        await summaryScreen(id);
      } catch (error) {
        say(`${label} refused: ${error.detail}`, true);
      }
    });
    return button;
  };
  const officer = me.role === "releasing_officer";
  const drafterAgency = s.drafter_agency;
  if (s.status === "pending" && officer && (s.consent_required || (s.consents_required || []).includes(me.agency)) && !s.consented && !(s.consents || []).includes(me.agency)) actions.append(act("Consent", "consent"), " ");
  if (s.status === "pending" && officer && drafterAgency === me.agency) actions.append(act("Approve", "approve"), " ");
  if (s.status !== "withdrawn" && drafterAgency === me.agency) actions.append(act("Withdraw", "withdraw"));

  const parts = [h("p", {}, h("a", { href: "#/queue" }, "← queue"))];
  if (drafterAgency) {
    const mayApprove = officer && me.agency === drafterAgency && me.subject !== s.drafted_by;
    parts.push(h("section", { class: "panel", "aria-labelledby": "summary-title" },
      h("h2", { id: "summary-title" }, `Summary ${s.summary_id} for ${s.partner}: `, h("span", { class: s.status }, s.status)),
      h("dl", { class: "facts rule" },
        h("dt", {}, "Drafted by"), h("dd", { id: "drafted-by" }, `${s.drafted_by} (${drafterAgency})`),
        h("dt", {}, "Two-person rule"), h("dd", {}, `approved by a releasing officer of ${drafterAgency} other than ${s.drafted_by}`),
        h("dt", {}, "You"), h("dd", { id: "may-approve" }, mayApprove ? "may approve" : officer && me.subject === s.drafted_by ? "drafted it: you may not approve it" : "may not approve it"),
        h("dt", {}, "Approved by"), h("dd", {}, s.approved_by || "not yet"),
        h("dt", {}, "Consents"), h("dd", {}, s.consents_required.length ? s.consents_required.map((a) => `${a} ${s.consents.includes(a) ? "✓ consented" : "awaited"}`).join(" · ") : "none needed (pre-authorised by agreement)")),
      actions));
    parts.push(h("div", { class: "pair" },
      h("section", { class: "panel", "aria-labelledby": "held-title" }, h("h2", { id: "held-title" }, `What ${drafterAgency} holds`),
        h("table", {}, h("thead", {}, h("tr", {}, ...["Report", "Agency", "Type", "Observed", "Elements"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, ...s.reports.map((r) => h("tr", {}, h("td", {}, h("code", {}, r.report_id)), h("td", {}, r.source_agency), h("td", {}, r.indicator_type), h("td", {}, fmt.when(r.observed_at)), h("td", {}, fmt.list(r.elements))))))),
      h("section", { class: "panel", "aria-labelledby": "goes-title" }, h("h2", { id: "goes-title" }, `What ${s.partner} receives`), fieldTable(s.fields))));
  } else {
    parts.push(h("section", { class: "panel", "aria-labelledby": "summary-title" },
      h("h2", { id: "summary-title" }, `Summary ${s.summary_id} for ${s.partner}: `, h("span", { class: s.status }, s.status)),
      h("p", {}, `Your agency's part: ${s.content.report_count} of your reports. `, s.consented ? "You consented." : s.consent_required ? "Your agency's consent is needed." : ""),
      actions));
  }
  view().replaceChildren(...parts);
}

// -- liaison: released summaries, STIX, TAXII -----------------------------------------------------------
async function releasedScreen() {
  const partner = me.partner;
  const events = await allPages(`/v1/partners/${encodeURIComponent(partner)}/summaries`, "summaries");
  const latest = new Map();
  for (const item of events) latest.set(item.summary_id, item); // in feed order: the last is the summary now
  const items = [...latest.values()].reverse();
  const collections = await api("/taxii2/api/collections/", { accept: "application/taxii+json;version=2.1" }).catch(() => ({ collections: [] }));
  const collection = (collections.collections || [])[0];
  const download = h("button", { type: "button", id: "stix" }, "Download the STIX 2.1 bundle");
  download.addEventListener("click", async () => {
    const envelope = await api(`/taxii2/api/collections/${encodeURIComponent(collection.id)}/objects/`, { accept: "application/taxii+json;version=2.1" });
    const bundle = { type: "bundle", id: `bundle--${crypto.randomUUID()}`, objects: envelope.objects || [] };
    const link = h("a", { href: URL.createObjectURL(new Blob([JSON.stringify(bundle, null, 1)], { type: "application/stix+json" })), download: `tiphub-${partner}.stix.json` });
    document.body.append(link);
    link.click();
    link.remove();
    say(`Downloaded ${bundle.objects.length} STIX objects.`);
  });
  view().replaceChildren(
    h("section", { class: "panel", "aria-labelledby": "released-title" },
      h("h2", { id: "released-title" }, `Summaries released to ${partner}, newest first`),
      items.length
        ? h("table", {}, h("thead", {}, h("tr", {}, ...["Summary", "Status", "Requirement", "Reports", "Agencies", "Elements", "Minor", "Seen"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, ...items.map((item) => {
            const c = item.content || {};
            return h("tr", { class: `released-summary ${item.status}`, dataset: { summary: item.summary_id } },
              h("td", {}, item.summary_id), h("td", { class: item.status }, item.status === "withdrawn" ? "withdrawn by the releasing agency" : item.status),
              h("td", {}, c.requirement_id || ""), h("td", {}, c.report_count ?? ""), h("td", {}, item.content ? fmt.list(c.agencies) : ""),
              h("td", {}, item.content ? fmt.list(c.elements) : ""), h("td", {}, item.content ? fmt.value(c.minor_involved) : ""),
              h("td", {}, item.content ? `${fmt.when(c.first_seen)} – ${fmt.when(c.last_seen)}` : ""));
          })))
        : h("p", { class: "muted" }, "Nothing has been released to you yet.")),
    h("section", { class: "panel", "aria-labelledby": "taxii-title" },
      h("h2", { id: "taxii-title" }, "STIX 2.1 and TAXII 2.1"),
      collection
        ? h("div", {},
          h("dl", { class: "facts" },
            h("dt", {}, "TAXII discovery"), h("dd", {}, h("code", { id: "taxii-address" }, `${location.origin}/taxii2/`)),
            h("dt", {}, "API root"), h("dd", {}, h("code", {}, `${location.origin}/taxii2/api/`)),
            h("dt", {}, "Collection"), h("dd", {}, h("code", {}, collection.id), ` (${collection.title || ""})`),
            h("dt", {}, "Credential"), h("dd", {}, `a hub token for your tools: ask your administrator for "tiphub token issue --role liaison --partner ${partner}"`)),
          h("p", {}, download))
        : h("p", { class: "muted" }, "No collection for your partner yet.")),
  );
}

// -- auditor ------------------------------------------------------------------------------------------
async function auditScreen() {
  let events = [];
  let next = "";
  let query = "";
  const body = h("tbody");
  const count = h("span", { class: "muted" });
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter the audit trail" });
  const kind = h("select", { name: "kind" }, ...["", "decision", "disclosure", "denial", "release", "erasure", "sign_in", "sign_out"].map((k) => h("option", { value: k }, k || "any kind")));
  const text = (name, label, hint) => h("label", {}, label, h("input", { type: "search", name, placeholder: hint || "" }));
  form.append(h("label", {}, "Kind", kind), text("actor", "Actor (or its beginning)", "analyst:"), text("recipient", "Recipient"),
    text("outcome", "Outcome"), text("item", "Item"), h("label", {}, "From", h("input", { type: "date", name: "since" })),
    h("label", {}, "Before", h("input", { type: "date", name: "until" })), h("button", { type: "submit" }, "Filter"));
  // Filters are the gateway's (GET /v1/audit): the whole trail is searched, not only the pages loaded.
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const params = new URLSearchParams();
    for (const [key, value] of new FormData(form)) if (value) params.set(key, key === "since" || key === "until" ? `${value}T00:00:00Z` : value);
    query = params.toString();
    events = [];
    next = "";
    await load(3);
    say(`${events.length} audit events match.`);
  });
  kind.addEventListener("change", () => form.requestSubmit());
  const more = h("button", { type: "button", class: "secondary" }, "Load more events");

  async function load(pages) {
    for (let i = 0; i < pages; i += 1) {
      const page = await api(`/v1/audit?limit=1000${query ? `&${query}` : ""}${next ? `&after=${encodeURIComponent(next)}` : ""}`);
      events.push(...page.events);
      const moved = page.next !== next;
      next = page.next;
      if (!page.events.length || !moved) break;
    }
    render();
  }
  function render() {
    count.textContent = `${events.length} events loaded${query ? " (filtered)" : ""}`;
    body.replaceChildren(...events.slice(-400).reverse().map((e) =>
      h("tr", { class: `audit-event ${e.kind}` }, h("td", {}, fmt.when(e.at)), h("td", {}, e.kind), h("td", {}, e.actor), h("td", {}, e.recipient || ""),
        h("td", {}, e.outcome), h("td", {}, h("code", {}, e.item_id || "")))));
  }
  more.addEventListener("click", () => load(5));

  const verifyResult = h("div", { id: "verify-result" });
  const verify = h("button", { type: "button", id: "verify" }, "Verify the chains");
  verify.addEventListener("click", async () => {
    verify.disabled = true;
    verifyResult.replaceChildren(h("p", { class: "muted" }, "Walking every partition's chain…"));
    try {
      const report = await api("/v1/audit/verify");
      const broken = report.partitions.find((p) => p.broken !== null && p.broken !== undefined);
      say(report.ok ? "Every chain verifies up to its signed anchor." : "A chain does not verify: see the first broken link.", !report.ok);
      verifyResult.replaceChildren(
        h("p", { class: report.ok ? "ok" : "broken" }, report.ok ? "Every chain verifies up to its signed anchor." : "A chain does not verify."),
        broken ? h("p", { class: "broken", id: "first-broken" }, `First broken link: partition ${broken.partition}, entry ${JSON.stringify(broken.broken)} (${broken.problem || "broken"})`) : null,
        h("table", {}, h("thead", {}, h("tr", {}, ...["Partition", "Entries", "Checkpoints", "Last seq", "Anchor", "Problem", "Foreign records"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, ...report.partitions.map((p) => h("tr", {}, h("td", {}, p.partition), h("td", {}, p.entries), h("td", {}, p.checkpoints), h("td", {}, p.last_seq ?? ""),
            h("td", {}, p.anchor_seq ?? ""), h("td", { class: p.problem ? "broken" : "ok" }, p.problem || "none"), h("td", {}, p.foreign.length))))));
    } catch (error) {
      verifyResult.replaceChildren(h("p", { class: "broken" }, `Verification failed: ${error.detail}`));
    } finally {
      verify.disabled = false;
    }
  });

  const token = h("input", { id: "subject-token", name: "token", autocomplete: "off", required: true, spellcheck: "false" });
  const seen = h("div", { id: "who-saw" });
  const whoForm = h("form", { "aria-label": "Who saw this person" },
    h("div", { class: "field" }, h("label", { for: "subject-token" }, "Linkage token of the person (from tiphub tokens, never a name)")), token, " ",
    h("button", { type: "submit" }, "Who saw this person"));
  whoForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const found = await api(`/v1/audit/subjects/${encodeURIComponent(token.value.trim())}`);
      seen.replaceChildren(
        h("p", {}, `${found.reports.length} reports name this person; seen ${found.seen_by.length} times.`),
        h("table", {}, h("thead", {}, h("tr", {}, ...["When", "Kind", "Actor", "Recipient", "Outcome", "Item"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, ...found.seen_by.map((e) => h("tr", { class: "seen" }, h("td", {}, fmt.when(e.at)), h("td", {}, e.kind), h("td", {}, e.actor), h("td", {}, e.recipient || ""), h("td", {}, e.outcome), h("td", {}, h("code", {}, e.item_id || "")))))));
    } catch (error) {
      seen.replaceChildren(h("p", { class: "muted" }, error.status === 404 ? "No accepted report names a person with this token." : `Refused: ${error.detail}`));
    }
  });

  view().replaceChildren(
    h("div", { class: "grid" },
      h("section", { class: "panel", "aria-labelledby": "audit-title" },
        h("h2", { id: "audit-title" }, "Audit trail ", count), form,
        h("div", { class: "scroll", tabindex: 0, role: "region", "aria-label": "Audit events, scrollable" }, h("table", {}, h("thead", {}, h("tr", {}, ...["At", "Kind", "Actor", "Recipient", "Outcome", "Item"].map((t) => h("th", { scope: "col" }, t)))), body)),
        more),
      h("div", {},
        h("section", { class: "panel", "aria-labelledby": "verify-title" }, h("h2", { id: "verify-title" }, "Chain verification"), verify, verifyResult),
        h("section", { class: "panel", "aria-labelledby": "who-title" }, h("h2", { id: "who-title" }, "Who saw this person"), whoForm, seen))),
  );
  await load(3);
}

// -- agency publisher -----------------------------------------------------------------------------------
const submitted = []; // this session's submissions (report ids only), in memory
async function submissionsScreen() {
  const rejections = h("tbody");
  const mine = h("tbody");
  const accepted = h("tbody");
  const refresh = async () => {
    const reports = await allPages("/v1/reports", "reports");
    accepted.replaceChildren(...reports.reverse().slice(0, 500).map((r) => // newest observed first
      h("tr", { class: "accepted-report", dataset: { report: r.report_id } }, h("td", {}, h("code", {}, r.report_id)), h("td", {}, r.indicator_type),
        h("td", {}, fmt.when(r.observed_at)), h("td", { class: r.status === "retracted" ? "withdrawn" : "" }, r.status))));
    const found = await allPages("/v1/reports/rejected", "rejected");
    rejections.replaceChildren(...found.reverse().map((r) =>
      h("tr", { class: "rejection", dataset: { report: r.report_id } }, h("td", {}, h("code", {}, r.report_id)), h("td", {}, h("b", {}, r.reason)),
        h("td", {}, h("code", {}, r.field || "")), h("td", {}, r.detail), h("td", {}, fmt.when(r.rejected_at)))));
    const statuses = await Promise.all(submitted.map((id) => api(`/v1/reports/${encodeURIComponent(id)}/status`).catch((e) => ({ report_id: id, status: `unknown (${e.status})` }))));
    mine.replaceChildren(...statuses.map((s) => h("tr", { class: "submission", dataset: { report: s.report_id } }, h("td", {}, h("code", {}, s.report_id)), h("td", { class: s.status }, s.status),
      h("td", {}, s.reason ? `${s.reason} at ${s.field || "the report"}: ${s.detail}` : ""))));
  };
  const json = h("textarea", { id: "report-json", name: "report", rows: 10, spellcheck: "false" });
  const publish = h("form", { "aria-label": "Publish a report" },
    h("div", { class: "field" }, h("label", { for: "report-json" }, "A report, JSON form (CONTRACT section 2)")), json,
    h("button", { type: "submit" }, "Publish"));
  publish.addEventListener("submit", async (event) => {
    event.preventDefault();
    let report;
    try {
      report = JSON.parse(json.value);
    } catch (error) {
      say(`Not JSON: ${error.message}`, true);
      return;
    }
    try {
      const answer = await api("/v1/reports", { method: "POST", body: report });
      submitted.push(answer.report_id);
      say(`Published ${answer.report_id}: ${answer.status}.`);
      await refresh();
    } catch (error) {
      say(`Refused: ${error.detail}`, true);
    }
  });
  const lookup = h("input", { id: "lookup", name: "report_id", autocomplete: "off" });
  const lookupResult = h("p", { id: "lookup-result" });
  const lookupForm = h("form", { "aria-label": "Status of a report" },
    h("div", { class: "field" }, h("label", { for: "lookup" }, "Report id")), lookup, " ", h("button", { type: "submit" }, "Status"));
  lookupForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const s = await api(`/v1/reports/${encodeURIComponent(lookup.value.trim())}/status`);
      lookupResult.textContent = s.status === "rejected" ? `rejected: ${s.reason} at ${s.field || "the report"} (${s.detail})` : s.status;
      say(`Report ${s.report_id}: ${lookupResult.textContent}`);
    } catch (error) {
      lookupResult.textContent = error.status === 404 ? "No report with this id from your agency." : error.detail;
    }
  });
  const again = h("button", { type: "button", class: "secondary" }, "Refresh");
  again.addEventListener("click", refresh);
  view().replaceChildren(
    h("div", { class: "grid" },
      h("section", { class: "panel", "aria-labelledby": "rejected-title" },
        h("h2", { id: "rejected-title" }, `Rejections of ${me.agency}'s submissions, newest first`), again,
        h("table", {}, h("thead", {}, h("tr", {}, ...["Report", "Reason", "Field", "Detail", "Rejected at"].map((t) => h("th", { scope: "col" }, t)))), rejections),
        h("h3", {}, `Accepted reports of ${me.agency}, newest first`),
        h("div", { class: "scroll", tabindex: 0, role: "region", "aria-label": "Accepted reports, scrollable" }, h("table", {}, h("thead", {}, h("tr", {}, ...["Report", "Type", "Observed", "Status"].map((t) => h("th", { scope: "col" }, t)))), accepted)),
        h("h3", {}, "Published from this console"),
        h("table", {}, h("thead", {}, h("tr", {}, ...["Report", "Status", "Why"].map((t) => h("th", { scope: "col" }, t)))), mine)),
      h("div", {},
        h("section", { class: "panel", "aria-labelledby": "status-title" }, h("h2", { id: "status-title" }, "A report's status"), lookupForm, lookupResult),
        h("section", { class: "panel", "aria-labelledby": "publish-title" }, h("h2", { id: "publish-title" }, "Publish"), publish))),
  );
  await refresh();
}

start();

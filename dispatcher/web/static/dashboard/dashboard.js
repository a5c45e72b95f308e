// The street supervisor's dashboard: live alerts (server-sent events), the tickets that need
// attention, KPI cards, trend charts (uPlot), the grid map coloured by backlog, workers, device
// health, and ticket search with detail, actions and CSV export.
import {
  t, tOr, currentLang, loadLang, storedLang, otherLang, siteLabel, formatDuration, formatTime,
  formatPercent, formatClock, setTimeZone,
} from "/static/common/i18n.js";
import { Api, ApiError, qs } from "/static/common/api.js";
import { actorText, reasonText } from "/static/common/audit.js";
import { describeError, fillMessage, showError } from "/static/common/errors.js";
import { drawGridMap } from "/static/common/gridmap.js";
import { LiveStream } from "/static/common/stream.js";

const api = new Api("gw.session.dashboard");
const $ = (sel) => document.querySelector(sel);
// Live events refresh what they change at once; the rest (devices, charts) every minute.
const REFRESH_MS = 60000;
const LIVE_REFRESH_MS = 500;
const PAGE = 20;
const ATTENTION_PAGE = 50;
const MAX_ALERTS = 50;
const STATUSES = ["open", "assigned", "accepted", "resolved", "closed", "rejected", "cancelled"];
const ACTIVE = ["open", "assigned", "accepted", "resolved"];
const ATTENTION = ["escalated", "no_worker", "review", "overdue"];
const SOURCES = ["camera", "sensor", "citizen"];
const PALETTE = ["#0b5cad", "#e8590c", "#1e8e3e", "#7e3ab8", "#c5221f", "#0f8b8d", "#b08900", "#5f6b78"];

const state = {
  site: null, grids: [], workers: [], period: "day", street: "", offset: 0, total: 0,
  filters: {}, charts: {}, timer: null, detail: null, me: null,
  attention: new Set(ATTENTION), alerts: [], seenAlerts: new Set(), unread: 0, liveTimer: null,
};

function show(el, on = true) { el.hidden = !on; }

// A passing message; ``detail`` (e.g. the server's own words) goes under it, smaller.
function toast(text, kind = "", detail = "") {
  const box = $("#toast");
  fillMessage(box, text, detail);
  box.className = "toast " + kind;
  show(box);
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => show(box, false), 3500);
}

function toastError(e) {
  const said = describeError(e);
  toast(said.text, "error", said.detail);
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function category(id) {
  const c = state.site && state.site.categories.find((x) => x.id === id);
  return c ? siteLabel(c, "label") : id;
}

function gridName(id) {
  const g = state.grids.find((x) => x.id === id);
  return g ? siteLabel(g) : id || "–";
}

function workerName(id) {
  const w = state.workers.find((x) => x.id === id);
  return w ? w.name : id || "–";
}

// How audit reasons and actors name grid cells and workers on this page.
const NAMES = { grid: gridName, worker: workerName };

function option(value, label) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = label;
  return o;
}

function scopeParams(extra = {}) {
  return qs({ period: state.period, street: state.street || undefined, ...extra });
}

// -- KPI cards -------------------------------------------------------------------------------
function setKpi(id, value, sub) {
  $(`#${id} b`).textContent = value;
  $(`#${id} small`).textContent = sub || "";
}

async function loadKpis() {
  const k = await api.get("/metrics/kpis" + scopeParams());
  setKpi("kpi-closure", formatPercent(k.closure_rate), t("kpi.closed_of", { closed: k.closed, opened: k.opened }));
  setKpi("kpi-median", formatDuration(k.median_close_s),
    k.p90_close_s === null ? "" : t("kpi.p90", { d: formatDuration(k.p90_close_s) }));
  setKpi("kpi-sla", formatPercent(k.sla_compliance), t("kpi.sla_sub"));
  setKpi("kpi-backlog", String(k.backlog), t("kpi.overdue", { n: k.overdue }));
  setKpi("kpi-reopen", formatPercent(k.reopen_rate), t("kpi.reopen_sub"));
  $("#kpi-backlog").classList.toggle("alarm", k.overdue > 0);
  Object.assign($("#kpis").dataset, { closed: k.closed, opened: k.opened, backlog: k.backlog });
  const box = $("#kpi-sources .sources");
  box.replaceChildren();
  const total = SOURCES.reduce((a, s) => a + (k.discovered_by[s] || 0), 0);
  for (const s of SOURCES) {
    const n = k.discovered_by[s] || 0;
    const row = document.createElement("div");
    row.className = "source-row";
    row.dataset.source = s;
    const label = document.createElement("span");
    label.textContent = t("source." + s);
    const bar = document.createElement("span");
    bar.className = "bar-track";
    const fill = document.createElement("span");
    fill.className = "bar-fill src-" + s;
    fill.style.width = (total ? (100 * n) / total : 0).toFixed(0) + "%";
    bar.append(fill);
    const num = document.createElement("b");
    num.textContent = String(n);
    row.append(label, bar, num);
    box.append(row);
  }
  const err = $("#metrics-error");
  fillMessage(err, k.metrics_error ? t("kpi.influx_down") : "", k.metrics_error || "");
  show(err, Boolean(k.metrics_error));
}

// -- charts ----------------------------------------------------------------------------------
function chartLabel(groupBy, key) {
  if (key === "all") return t("chart.all");
  return groupBy === "grid" ? gridName(key) : category(key);
}

async function loadChart(target, groupBy, transition) {
  const s = await api.get("/metrics/series" + scopeParams({ group_by: groupBy, transition }));
  const el = $(target);
  const width = Math.max(260, el.clientWidth || 400);
  const data = [s.times, ...s.lines.map((l) => l.values)];
  const tz = state.site.timezone;
  const tick = new Intl.DateTimeFormat(currentLang(), s.bucket_s < 86400
    ? { timeZone: tz, hour: "2-digit", minute: "2-digit", hour12: false }
    : { timeZone: tz, month: "2-digit", day: "2-digit" });
  const full = new Intl.DateTimeFormat(currentLang(), {
    timeZone: tz, month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hour12: false,
  });
  const opts = {
    width, height: 220,
    scales: { x: { time: true } },
    axes: [
      { stroke: "#5f6b78", values: (u, splits) => splits.map((v) => (v == null ? "" : tick.format(new Date(v * 1000)))) },
      { stroke: "#5f6b78", size: 40, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000] },
    ],
    series: [
      { label: t("chart.time"), value: (u, v) => (v == null ? "–" : full.format(new Date(v * 1000))) },
      ...s.lines.map((l, i) => ({
        label: chartLabel(groupBy, l.key), stroke: PALETTE[i % PALETTE.length], width: 2,
        points: { show: s.times.length <= 31 },
      })),
    ],
    legend: { show: true },
    cursor: { drag: { x: false, y: false } },
  };
  if (state.charts[target]) state.charts[target].destroy();
  el.replaceChildren();
  if (!s.lines.length) {
    const p = document.createElement("p");
    p.className = "muted empty-chart";
    p.textContent = t("chart.no_data");
    el.append(p);
    delete state.charts[target];
    return;
  }
  state.charts[target] = new window.uPlot(opts, data, el);
}

function loadCharts() {
  return Promise.all([
    loadChart("#chart-grid", "grid", $("#chart-grid-transition").value),
    loadChart("#chart-cat", "category", $("#chart-cat-transition").value),
  ]);
}

// -- grid map --------------------------------------------------------------------------------
function backlogColour(n) {
  if (n === null || n === undefined) return "#eef1f4";
  if (n === 0) return "#cdeccf";
  if (n <= 2) return "#fff1b8";
  if (n <= 5) return "#ffc078";
  return "#ff8a80";
}

function drawLegend() {
  const legend = $("#map-legend");
  legend.replaceChildren();
  for (const [label, n] of [["0", 0], ["1–2", 1], ["3–5", 3], [">5", 9]]) {
    const sw = document.createElement("span");
    sw.className = "swatch";
    const dot = document.createElement("i");
    dot.className = "sw-" + (n === 0 ? "0" : n === 1 ? "1" : n === 3 ? "3" : "6");
    sw.append(dot, document.createTextNode(label));
    legend.append(sw);
  }
}

async function loadMap() {
  state.grids = await api.get("/grids");
  const shown = state.grids.filter((g) => !state.street || g.street_id === state.street);
  drawGridMap($("#map"), shown, {
    fill: (g) => backlogColour(g.backlog),
    label: (g) => `${siteLabel(g)}\n${t("map.backlog", { n: g.backlog ?? "–", late: g.overdue ?? 0 })}`,
    title: (g) => `${siteLabel(g)}: ${t("map.backlog", { n: g.backlog ?? "–", late: g.overdue ?? 0 })}`,
    onSelect: (g) => {
      $("#filters").grid.value = g.id;
      state.offset = 0;
      readFilters();
      loadTickets();
      $("#search").scrollIntoView({ behavior: "smooth" });
    },
  });
  drawLegend();
}

// -- workers and devices ---------------------------------------------------------------------
async function loadWorkers() {
  const page = await api.get("/workers" + qs({ limit: 500 }));
  state.workers = page.items;
  const body = $("#workers tbody");
  body.replaceChildren();
  for (const w of page.items.filter((x) => !state.street || streetOfGrid(x.grid_id) === state.street)) {
    const tr = document.createElement("tr");
    tr.dataset.worker = w.id;
    tr.append(
      cell(w.name), cell(gridName(w.grid_id)),
      cell(w.on_duty ? t("workers.yes") : t("workers.no"), w.on_duty ? "ok" : "muted"),
      cell(String(w.open_tickets), "num"), cell(String(w.closed_today), "num closed-today"),
      cell(formatDuration(w.median_close_s), "num"),
    );
    body.append(tr);
  }
}

function streetOfGrid(id) {
  const g = state.grids.find((x) => x.id === id);
  return g ? g.street_id : null;
}

function ago(iso) {
  if (!iso) return t("devices.never");
  return t("devices.ago", { d: formatDuration((Date.now() - new Date(iso).getTime()) / 1000) });
}

async function loadDevices() {
  const page = await api.get("/devices" + qs({ limit: 500 }));
  const body = $("#devices tbody");
  body.replaceChildren();
  for (const d of page.items) {
    const tr = document.createElement("tr");
    tr.dataset.device = d.id;
    const parts = d.cameras.map((c) => `${c.camera_id} ${t("camera." + c.state)}`)
      .concat(d.sensors.map((s) => `${s.sensor_id}${s.alarm ? " ⚠" : ""}`));
    tr.append(
      cell(d.id), cell(t("devices.kind_" + d.kind)),
      cell(d.online ? t("devices.online") : t("devices.offline"), d.online ? "ok" : "bad"),
      cell(d.fps === null ? "–" : d.fps.toFixed(1), "num"), cell(ago(d.last_seen)),
      cell(d.outbox_depth === null ? "–" : String(d.outbox_depth), "num"),
      cell(parts.join(", ") || "–", "small"),
    );
    body.append(tr);
  }
}

// -- needs attention -------------------------------------------------------------------------
function attentionReasons(tk) {
  if (!ACTIVE.includes(tk.status)) return [];
  const out = [];
  if (tk.escalated) out.push("escalated");
  if (!tk.worker_id) out.push("no_worker");
  if (tk.status === "resolved" && tk.review_at) out.push("review");
  if (new Date(tk.deadline).getTime() < Date.now()) out.push("overdue");
  return out;
}

async function loadAttention() {
  const scope = { street: state.street || undefined };
  const chosen = ATTENTION.filter((r) => state.attention.has(r));
  const [counts, page] = await Promise.all([
    Promise.all(ATTENTION.map((r) => api.get("/tickets" + qs({ ...scope, attention: r, limit: 1 })))),
    chosen.length
      ? api.get("/tickets" + qs({ ...scope, attention: chosen, sort: "deadline", limit: ATTENTION_PAGE }))
      : Promise.resolve({ items: [], total: 0 }),
  ]);
  ATTENTION.forEach((r, i) => {
    const chip = $(`#attention-filters [data-reason=${r}]`);
    chip.querySelector("b").textContent = String(counts[i].total);
    chip.setAttribute("aria-pressed", String(state.attention.has(r)));
    chip.classList.toggle("on", state.attention.has(r));
  });
  const body = $("#attention-table tbody");
  body.replaceChildren();
  for (const tk of page.items) {
    const tr = document.createElement("tr");
    tr.dataset.id = tk.id;
    tr.className = "clickable";
    const why = document.createElement("td");
    for (const r of attentionReasons(tk)) {
      const chip = document.createElement("span");
      chip.className = "reason r-" + r;
      chip.dataset.reason = r;
      chip.textContent = t("attention." + r);
      why.append(chip);
    }
    tr.append(
      cell(String(tk.id), "num"), cell(category(tk.category)), why, cell(gridName(tk.grid_id)),
      cell(workerName(tk.worker_id)), cell(formatTime(tk.opened_at)), slaCell(tk),
    );
    tr.addEventListener("click", () => openDetail(tk.id));
    body.append(tr);
  }
  show($("#attention-table"), page.items.length > 0);
  show($("#attention-empty"), page.items.length === 0);
  const more = $("#attention-more");
  more.textContent = t("attention.more", { shown: page.items.length, total: page.total });
  show(more, page.total > page.items.length);
  $("#attention").dataset.total = String(page.total);
}

// -- live alerts -----------------------------------------------------------------------------
let audio = null;

function unlockAudio() {
  if (!audio && window.AudioContext) audio = new AudioContext();
  if (audio && audio.state === "suspended") audio.resume();
}

function beep(times) {
  if (!audio || audio.state !== "running") return;
  const now = audio.currentTime;
  for (let i = 0; i < times; i++) {
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.frequency.value = 660;
    gain.gain.setValueAtTime(0.2, now + i * 0.3);
    gain.gain.exponentialRampToValueAtTime(0.001, now + i * 0.3 + 0.25);
    osc.connect(gain).connect(audio.destination);
    osc.start(now + i * 0.3);
    osc.stop(now + i * 0.3 + 0.25);
  }
}

function alertText(a) {
  return t("alert.ticket", { id: a.ticket_id, category: category(a.category), grid: gridName(a.grid_id) });
}

function alertItem(a) {
  const li = document.createElement("li");
  li.className = "alert-item r-" + a.reason;
  li.dataset.ticket = a.ticket_id;
  li.dataset.reason = a.reason;
  const head = document.createElement("b");
  head.textContent = t("alert." + a.reason);
  const what = document.createElement("span");
  what.textContent = alertText(a);
  const when = document.createElement("small");
  when.className = "muted";
  const why = alertReason(a);
  when.textContent = formatTime(a.ts) + (why ? " · " + why : "");
  li.append(head, what, when);
  li.addEventListener("click", () => {
    toggleAlerts(false);
    openDetail(Number(a.ticket_id));
  });
  return li;
}

function renderAlerts() {
  const list = $("#alerts-list");
  list.replaceChildren(...state.alerts.map(alertItem));
  show($("#alerts-empty"), state.alerts.length === 0);
  const count = $("#alerts-count");
  count.textContent = String(state.unread);
  show(count, state.unread > 0);
}

function alertToast(a) {
  const box = document.createElement("div");
  box.className = "alert-toast r-" + a.reason;
  box.setAttribute("role", "alert");
  box.dataset.ticket = a.ticket_id;
  box.dataset.reason = a.reason;
  const text = document.createElement("div");
  const head = document.createElement("b");
  head.textContent = t("alert." + a.reason);
  const what = document.createElement("span");
  what.textContent = alertText(a);
  text.append(head, what);
  const view = document.createElement("button");
  view.type = "button";
  view.className = "link-btn";
  view.textContent = t("alerts.view");
  const close = document.createElement("button");
  close.type = "button";
  close.className = "link-btn";
  close.textContent = "×";
  close.setAttribute("aria-label", t("alerts.dismiss"));
  const dismiss = () => box.remove();
  view.addEventListener("click", () => { dismiss(); openDetail(Number(a.ticket_id)); });
  close.addEventListener("click", dismiss);
  box.append(text, view, close);
  $("#alert-toasts").prepend(box);
  // A safety hazard stays until someone looks at it; the others fade after a while.
  if (a.reason !== "safety") setTimeout(dismiss, 15000);
}

// An alert's note is the English text of the audit row it was made from: the list shows that
// row's reason in words instead, once it is read (until then nothing; if it cannot be read,
// the note as sent).
function alertReason(a) {
  if (a.entry === undefined) return "";
  return a.entry ? reasonText(a.entry, NAMES) : a.note || "";
}

async function loadAlertEntry(a) {
  const d = await api.get(`/tickets/${a.ticket_id}`);
  const at = new Date(a.ts).getTime();
  const transition = a.reason === "safety" ? "opened" : "escalated";
  const rows = d.audit.filter((x) => x.transition === transition && new Date(x.at).getTime() === at);
  return rows.length ? rows[rows.length - 1] : null;
}

function onAlert(a) {
  const key = `${a.ticket_id}:${a.reason}:${a.ts}`;
  if (state.seenAlerts.has(key)) return; // pushes are at-least-once
  state.seenAlerts.add(key);
  state.alerts.unshift(a);
  state.alerts.length = Math.min(state.alerts.length, MAX_ALERTS);
  state.unread += 1;
  loadAlertEntry(a)
    .catch((e) => {
      console.warn("reason of alert not read; showing its note", a.ticket_id, e);
      return null;
    })
    .then((entry) => {
      a.entry = entry;
      renderAlerts();
    });
  renderAlerts();
  alertToast(a);
  beep(a.reason === "safety" ? 3 : 1);
}

function toggleAlerts(open = $("#alerts").hidden) {
  show($("#alerts"), open);
  $("#alerts-btn").setAttribute("aria-expanded", String(open));
}

// What a ticket change or an alert can change: the KPI cards, the attention list, the map,
// the workers' counts and the ticket list. Several events in a burst make one refresh.
function scheduleLiveRefresh() {
  clearTimeout(state.liveTimer);
  state.liveTimer = setTimeout(async () => {
    try {
      await Promise.all([loadKpis(), loadAttention(), loadMap(), loadWorkers()]);
      await loadTickets();
      $("#updated").textContent = t("dash.updated", { at: formatClock() });
      document.body.dataset.live = String(Date.now());
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) toastError(e);
    }
  }, LIVE_REFRESH_MS);
}

function onLive(ev) {
  if (ev.event === "logout") {
    needLogin(t("login.expired"));
    return;
  }
  if (ev.event === "alert") {
    let a;
    try {
      a = JSON.parse(ev.data);
    } catch (e) {
      console.warn("bad alert", e);
      return;
    }
    onAlert(a);
  }
  if (ev.event === "alert" || ev.event === "ticket") scheduleLiveRefresh();
}

function setLive(mode) {
  const el = $("#live");
  el.dataset.state = mode;
  el.textContent = t("net." + mode);
}

const live = new LiveStream(api, {
  onEvent: onLive,
  onState: setLive,
  // after each (re)connection: catch up on what happened while the stream was away
  onOpen: scheduleLiveRefresh,
  onUnauthorized: () => needLogin(t("login.expired")),
});

// -- tickets ---------------------------------------------------------------------------------
function readFilters() {
  const f = $("#filters");
  state.filters = {
    q: f.q.value.trim() || undefined,
    status: f.status.value || undefined,
    category: f.category.value || undefined,
    grid: f.grid.value || undefined,
    source: f.source.value || undefined,
    overdue: f.overdue.checked ? "true" : undefined,
    street: state.street || undefined,
  };
}

function slaCell(tk) {
  const active = ["open", "assigned", "accepted", "resolved"].includes(tk.status);
  const left = (new Date(tk.deadline).getTime() - Date.now()) / 1000;
  if (!active) return cell(tk.closed_at ? formatTime(tk.closed_at) : "–", "muted");
  return left < 0
    ? cell(t("sla.overdue", { d: formatDuration(-left) }), "sla late")
    : cell(t("sla.left", { d: formatDuration(left) }), "sla ok");
}

async function loadTickets() {
  const page = await api.get("/tickets" + qs({ ...state.filters, sort: "-opened_at", limit: PAGE, offset: state.offset }));
  state.total = page.total;
  const body = $("#tickets tbody");
  body.replaceChildren();
  for (const tk of page.items) {
    const tr = document.createElement("tr");
    tr.dataset.id = tk.id;
    tr.className = "clickable";
    const st = document.createElement("td");
    const chip = document.createElement("span");
    chip.className = "status s-" + tk.status;
    chip.textContent = t("status." + tk.status);
    st.append(chip);
    tr.append(
      cell(String(tk.id), "num"), cell(category(tk.category)), st, cell(gridName(tk.grid_id)),
      cell(workerName(tk.worker_id)), cell(t("source." + tk.source)), cell(formatTime(tk.opened_at)),
      slaCell(tk),
    );
    tr.addEventListener("click", () => openDetail(tk.id));
    body.append(tr);
  }
  const from = page.total ? state.offset + 1 : 0;
  $("#page-info").textContent = t("pager.info", { from, to: state.offset + page.items.length, total: page.total });
  $("#prev").disabled = state.offset === 0;
  $("#next").disabled = state.offset + PAGE >= page.total;
}

async function exportCsv() {
  try {
    const r = await api.request("/tickets/export" + qs(state.filters), { raw: true });
    const blob = await r.blob();
    const name = (r.headers.get("Content-Disposition") || "").match(/filename="([^"]+)"/);
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = name ? name[1] : "tickets.csv";
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 5000);
  } catch (e) {
    toastError(e);
  }
}

// -- ticket detail ---------------------------------------------------------------------------
async function openDetail(id) {
  let d;
  try {
    d = await api.get(`/tickets/${id}`);
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) toastError(e);
    return;
  }
  state.detail = d;
  $("#dd-title").textContent = `#${d.id} ${category(d.category)}`;
  const prio = $("#dd-prio");
  prio.className = "prio p" + d.priority;
  prio.textContent = "P" + d.priority;
  const st = $("#dd-status");
  st.className = "status s-" + d.status;
  st.textContent = t("status." + d.status);
  $("#dd-meta").textContent = [
    gridName(d.grid_id), workerName(d.worker_id), t("source." + d.source),
    t("detail.opened_at", { at: formatTime(d.opened_at) }),
    t("detail.deadline_at", { at: formatTime(d.deadline) }),
    d.close_reason ? t("detail.close_reason", { reason: tOr("close_reason." + d.close_reason, d.close_reason) }) : "",
  ].filter(Boolean).join(" · ");
  const images = $("#dd-images");
  images.replaceChildren();
  for (const e of d.evidence) {
    const fig = document.createElement("figure");
    const img = document.createElement("img");
    img.alt = t("evidence." + e.kind);
    const cap = document.createElement("figcaption");
    cap.textContent = `${t("evidence." + e.kind)} · ${formatTime(e.created_at)}`;
    fig.append(img, cap);
    images.append(fig);
    api.imageUrl(e.url).then((u) => { img.src = u; }).catch(() => { cap.textContent += " ✕"; });
  }
  if (!d.evidence.length) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = t("detail.no_evidence");
    images.append(p);
  }
  const ver = $("#dd-verify");
  ver.replaceChildren();
  for (const v of d.verifications) {
    const li = document.createElement("li");
    li.textContent = `${v.camera_id}: ${v.outcome ? t("verify." + v.outcome) : t("verify.waiting")} (${formatTime(v.answered_at || v.asked_at)})`;
    ver.append(li);
  }
  if (!d.verifications.length) ver.append(Object.assign(document.createElement("li"), { textContent: "–" }));
  const audit = $("#dd-audit tbody");
  audit.replaceChildren();
  for (const a of d.audit) {
    const tr = document.createElement("tr");
    tr.append(cell(formatTime(a.at)), cell(t("transition." + a.transition)), cell(actorText(a.actor, NAMES), "small"),
      cell(reasonText(a, NAMES), "small"));
    audit.append(tr);
  }
  renderActions(d);
  const dlg = $("#detail");
  if (!dlg.open) dlg.showModal();
}

function renderActions(d) {
  const box = $("#dd-actions");
  box.replaceChildren();
  show($("#dd-error"), false);
  const reason = document.createElement("input");
  reason.maxLength = 500;
  reason.placeholder = t("actions.reason");
  reason.id = "dd-reason";
  const run = (path, body) => async () => {
    const text = reason.value.trim();
    if (!text) {
      $("#dd-error").textContent = t("reason.required");
      show($("#dd-error"));
      return;
    }
    try {
      await api.post(`/tickets/${d.id}/${path}`, { ...body, reason: text });
      toast(t("actions.done"), "ok");
      await openDetail(d.id);
      refresh();
    } catch (e) {
      showError($("#dd-error"), e);
      show($("#dd-error"));
    }
  };
  const btn = (label, cls, fn) => {
    const b = document.createElement("button");
    b.className = cls;
    b.textContent = label;
    b.type = "button";
    b.addEventListener("click", fn);
    return b;
  };
  const buttons = [];
  if (["open", "assigned", "accepted"].includes(d.status)) {
    const pick = document.createElement("select");
    pick.append(option("", t("actions.auto_assign")));
    state.workers.forEach((w) => pick.append(option(w.id, `${w.name} (${gridName(w.grid_id)})`)));
    buttons.push(pick, btn(t("actions.reassign"), "secondary", () => run("reassign", { worker_id: pick.value || null })()));
    buttons.push(btn(t("action.false_alarm"), "danger", run("reject", {})));
  }
  if (d.status === "resolved") {
    buttons.push(btn(t("actions.review_close"), "primary", run("review", { decision: "close" })));
    buttons.push(btn(t("actions.review_reopen"), "danger", run("review", { decision: "reopen" })));
  }
  if (d.status === "closed") buttons.push(btn(t("actions.review_reopen"), "danger", run("review", { decision: "reopen" })));
  if (buttons.length) box.append(reason, ...buttons);
}

// -- lifecycle -------------------------------------------------------------------------------
async function refresh() {
  try {
    await Promise.all([loadKpis(), loadMap(), loadWorkers(), loadDevices(), loadCharts()]);
    await Promise.all([loadAttention(), loadTickets()]);
    $("#updated").textContent = t("dash.updated", { at: formatClock() });
    document.body.dataset.loaded = String(Date.now());
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) toastError(e);
  }
}

function fillSelects() {
  const f = $("#filters");
  const keepFirst = (sel) => { while (sel.options.length > 1) sel.remove(1); };
  [f.status, f.category, f.grid, f.source].forEach(keepFirst);
  STATUSES.forEach((s) => f.status.append(option(s, t("status." + s))));
  state.site.categories.forEach((c) => f.category.append(option(c.id, siteLabel(c, "label"))));
  state.grids.forEach((g) => f.grid.append(option(g.id, siteLabel(g))));
  SOURCES.forEach((s) => f.source.append(option(s, t("source." + s))));
  const street = $("#street");
  street.replaceChildren();
  const mine = state.site.streets.filter((s) => state.me.streets.includes(s.id));
  if (mine.length > 1) street.append(option("", t("dash.all_streets")));
  mine.forEach((s) => street.append(option(s.id, siteLabel(s))));
  if (mine.length === 1) state.street = mine[0].id;
  street.value = state.street;
}

async function start() {
  show($("#login"), false);
  show($("#controls"));
  show($("#board"));
  state.me = await api.get("/auth/me");
  [state.site, state.grids] = await Promise.all([api.get("/site"), api.get("/grids")]);
  setTimeZone(state.site.timezone);
  $("#office").textContent = siteLabel(state.site);
  $("#who").textContent = t("list.who", { name: state.me.display_name, id: state.me.username });
  fillSelects();
  readFilters();
  await refresh();
  clearInterval(state.timer);
  state.timer = setInterval(refresh, REFRESH_MS);
  live.start();
  document.body.dataset.ready = "1";
}

function needLogin(message) {
  clearInterval(state.timer);
  live.stop();
  toggleAlerts(false);
  $("#alert-toasts").replaceChildren();
  state.alerts = [];
  state.unread = 0;
  renderAlerts();
  show($("#controls"), false);
  show($("#board"), false);
  show($("#login"));
  const err = $("#login-error");
  err.textContent = message || "";
  show(err, Boolean(message));
  document.body.dataset.ready = "1";
}

async function switchLang() {
  await loadLang(otherLang());
  $("#lang").textContent = t("lang.switch");
  if (state.me) {
    $("#office").textContent = siteLabel(state.site);
    $("#who").textContent = t("list.who", { name: state.me.display_name, id: state.me.username });
    setLive($("#live").dataset.state);
    renderAlerts();
    const f = $("#filters");
    const kept = { status: f.status.value, category: f.category.value, grid: f.grid.value, source: f.source.value };
    fillSelects();
    for (const [k, v] of Object.entries(kept)) f[k].value = v;
    await refresh();
    if ($("#detail").open && state.detail) await openDetail(state.detail.id);
  }
}

async function main() {
  await loadLang(storedLang());
  $("#lang").textContent = t("lang.switch");
  $("#lang").addEventListener("click", switchLang);
  api.onUnauthorized = () => needLogin(t("login.expired"));
  $("#login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const err = $("#login-error");
    try {
      const s = await api.login(f.username.value.trim(), f.password.value);
      if (s.role === "worker") {
        api.session = null;
        fillMessage(err, t("dash.supervisors_only"));
        show(err);
        return;
      }
      f.password.value = "";
      await start();
    } catch (e) {
      if (e instanceof ApiError && e.status === 429) fillMessage(err, t("login.locked"));
      else if (e instanceof ApiError && e.status === 401) fillMessage(err, t("login.wrong"));
      else showError(err, e);
      show(err);
    }
  });
  $("#logout").addEventListener("click", async () => {
    try { await api.logout(); } catch (e) { api.session = null; }
    needLogin();
  });
  document.querySelectorAll(".seg button").forEach((b) => b.addEventListener("click", () => {
    state.period = b.dataset.period;
    document.querySelectorAll(".seg button").forEach((x) => x.classList.toggle("active", x === b));
    refresh();
  }));
  $("#street").addEventListener("change", (ev) => {
    state.street = ev.target.value;
    state.offset = 0;
    readFilters();
    refresh();
  });
  $("#chart-grid-transition").addEventListener("change", loadCharts);
  $("#chart-cat-transition").addEventListener("change", loadCharts);
  $("#filters").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.offset = 0;
    readFilters();
    loadTickets();
  });
  $("#prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); loadTickets(); });
  $("#next").addEventListener("click", () => { state.offset += PAGE; loadTickets(); });
  $("#export").addEventListener("click", exportCsv);
  $("#alerts-btn").addEventListener("click", () => toggleAlerts());
  $("#alerts-read").addEventListener("click", () => {
    state.unread = 0;
    renderAlerts();
    toggleAlerts(false);
  });
  document.querySelectorAll("#attention-filters .chip").forEach((chip) => chip.addEventListener("click", () => {
    const r = chip.dataset.reason;
    if (state.attention.has(r)) state.attention.delete(r);
    else state.attention.add(r);
    loadAttention().catch(toastError);
  }));
  // Browsers let a page make sounds only after a click or key press on it.
  document.addEventListener("click", unlockAudio);
  document.addEventListener("keydown", unlockAudio);
  window.addEventListener("resize", () => {
    for (const [target, chart] of Object.entries(state.charts)) {
      chart.setSize({ width: Math.max(260, $(target).clientWidth), height: 220 });
    }
  });
  if (api.token) {
    try {
      await start();
    } catch (e) {
      needLogin();
    }
  } else {
    needLogin();
  }
}

main();

// The grid worker's phone app: live ticket list, ticket detail with map and evidence, and the
// actions (accept, decline, arrived, resolve with photo, false alarm) through a retrying queue.
import {
  t, loadLang, storedLang, otherLang, siteLabel, formatDuration, formatTime, setTimeZone,
} from "/static/common/i18n.js";
import { Api, ApiError, NetworkError, qs } from "/static/common/api.js";
import { reasonText } from "/static/common/audit.js";
import { describeError, fillMessage, showError } from "/static/common/errors.js";
import { drawGridMap } from "/static/common/gridmap.js";
import { LiveStream } from "/static/common/stream.js";
import { ActionQueue } from "/app/queue.js";

const api = new Api("gw.session.app");
const $ = (sel) => document.querySelector(sel);
const TODO = ["assigned", "accepted"];
const DONE = ["resolved", "closed", "rejected", "cancelled"];
const SEND_TIMEOUT_MS = 45000;

const state = {
  site: null,
  grids: [],
  tickets: [],
  tab: "todo",
  pending: {}, // ticket id -> queued action kinds
  detail: null,
  position: null,
  objectUrls: [],
  reasonFor: null,
  photo: null,
  lastPositionSent: 0,
};

// -- small helpers ---------------------------------------------------------------------------
function show(el, on = true) {
  el.hidden = !on;
}

// A passing message; ``detail`` (e.g. the server's own words) goes under it, smaller.
function toast(text, kind = "", detail = "") {
  const box = $("#toast");
  fillMessage(box, text, detail);
  box.className = "toast " + kind;
  show(box);
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => show(box, false), 3500);
}

function category(id) {
  const c = state.site && state.site.categories.find((x) => x.id === id);
  return c ? siteLabel(c, "label") : id;
}

function gridName(id) {
  const g = state.grids.find((x) => x.id === id);
  return g ? siteLabel(g) : id || "–";
}

function slaText(deadline, status) {
  if (!TODO.includes(status) && status !== "open") return { text: "", cls: "" };
  const left = (new Date(deadline).getTime() - Date.now()) / 1000;
  if (left < 0) return { text: t("sla.overdue", { d: formatDuration(-left) }), cls: "late" };
  return { text: t("sla.left", { d: formatDuration(left) }), cls: left < 1800 ? "soon" : "ok" };
}

function tickSla() {
  document.querySelectorAll("[data-deadline]").forEach((el) => {
    const s = slaText(el.dataset.deadline, el.dataset.status);
    el.textContent = s.text;
    el.className = el.className.replace(/\b(late|soon|ok)\b/g, "").trim() + " " + s.cls;
  });
}

function releaseImages() {
  state.objectUrls.forEach((u) => URL.revokeObjectURL(u));
  state.objectUrls = [];
}

// -- alerts: sound, vibration, badge ---------------------------------------------------------
let audio = null;

function unlockAudio() {
  if (!audio && window.AudioContext) audio = new AudioContext();
  if (audio && audio.state === "suspended") audio.resume();
}

function beep() {
  if (!audio) return;
  const now = audio.currentTime;
  [0, 0.25].forEach((offset) => {
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.frequency.value = 880;
    gain.gain.setValueAtTime(0.2, now + offset);
    gain.gain.exponentialRampToValueAtTime(0.001, now + offset + 0.2);
    osc.connect(gain).connect(audio.destination);
    osc.start(now + offset);
    osc.stop(now + offset + 0.2);
  });
}

function alertNewTicket(push) {
  beep();
  if (navigator.vibrate) navigator.vibrate([200, 100, 200]);
  toast(t("push.new_ticket", { id: push.ticket_id, category: category(push.category) }), "new");
}

function updateBadge() {
  const waiting = withQueued(state.tickets).filter((x) => x.status === "assigned").length;
  const badge = $("#badge");
  badge.textContent = String(waiting);
  show(badge, waiting > 0);
  document.title = (waiting ? `(${waiting}) ` : "") + t("app.title");
  if (navigator.setAppBadge) {
    (waiting ? navigator.setAppBadge(waiting) : navigator.clearAppBadge()).catch(() => {});
  }
}

function setNet(mode) {
  const net = $("#net");
  net.className = "net " + mode;
  net.dataset.state = mode;
  net.title = t("net." + mode);
  net.textContent = t("net." + mode);
}

// -- the action queue ------------------------------------------------------------------------
async function sendAction(a) {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), SEND_TIMEOUT_MS);
  const path = `/tickets/${a.ticketId}/${a.kind}`;
  try {
    if (a.kind === "resolve") {
      const form = new FormData();
      if (a.photo) form.append("photo", a.photo, "after.jpg");
      if (a.note) form.append("note", a.note);
      return await api.request(path, { method: "POST", form, signal: ctrl.signal });
    }
    const json = a.reason ? { reason: a.reason } : undefined;
    return await api.request(path, { method: "POST", json, signal: ctrl.signal });
  } catch (e) {
    if (e.name === "AbortError") throw new NetworkError("timed out");
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

const queue = new ActionQueue(sendAction, {
  onChange: (count) => {
    const el = $("#queue-state");
    el.textContent = t("queue.waiting", { n: count });
    show(el, count > 0);
    queue.all().then((items) => {
      state.pending = {};
      items.forEach((a) => { (state.pending[a.ticketId] = state.pending[a.ticketId] || []).push(a.kind); });
      if (!$("#view-list").hidden) renderList();
      if (state.detail) show($("#d-pending"), Boolean(state.pending[state.detail.id]));
    });
  },
  onDone: (a) => {
    toast(t("done." + a.kind, { id: a.ticketId }), "ok");
    refreshList();
    refreshDetail(a.ticketId);
  },
  onFailed: (a, err) => {
    if (err.status === 409 && a.tries > 0) {
      toast(t("queue.already", { id: a.ticketId }));
    } else {
      const said = describeError(err);
      toast(t("queue.refused", { id: a.ticketId, why: said.text }), "error", said.detail);
    }
    refreshList();
  },
  onAuth: () => needLogin(t("login.expired")),
});

async function act(kind, ticketId, extra = {}) {
  unlockAudio();
  await queue.add({ kind, ticketId, ...extra });
  if (!navigator.onLine) toast(t("queue.offline_saved"));
  const optimistic = { accept: "accepted", resolve: "resolved", reject: "rejected" }[kind];
  const ticket = state.tickets.find((x) => x.id === ticketId);
  if (ticket && optimistic) ticket.status = optimistic;
  if (ticket && (kind === "decline" || kind === "reject")) {
    state.tickets = state.tickets.filter((x) => x.id !== ticketId);
  }
  if (kind === "accept" || kind === "arrived") {
    if (state.detail && state.detail.id === ticketId) {
      if (kind === "accept") state.detail.status = "accepted";
      if (kind === "arrived") state.detail.arrived_at = new Date().toISOString();
      renderDetail();
    }
  } else {
    location.hash = "#/";
  }
  updateBadge();
}

// -- live stream (server-sent events, see common/stream.js) ----------------------------------
function onPush(ev) {
  if (ev.event === "logout") {
    needLogin(t("login.expired"));
    return;
  }
  if (ev.event !== "ticket") return;
  let push;
  try {
    push = JSON.parse(ev.data);
  } catch (e) {
    console.warn("bad push", e);
    return;
  }
  const id = Number(push.ticket_id);
  if (push.action === "assigned" || push.action === "reopened") alertNewTicket(push);
  else if (push.action === "reminder") {
    if (navigator.vibrate) navigator.vibrate(300);
    toast(t("push.reminder", { id }), "warn");
  } else if (["unassigned", "cancelled", "closed"].includes(push.action)) {
    toast(t("push." + push.action, { id }));
  }
  refreshList();
  refreshDetail(id);
}

const live = new LiveStream(api, {
  onEvent: onPush,
  onState: setNet,
  onOpen: () => {
    refreshList();
    queue.flush();
  },
  onUnauthorized: () => needLogin(t("login.expired")),
});

function startStream() {
  live.start();
}

function stopStream() {
  live.stop();
}

// -- data ------------------------------------------------------------------------------------
// The site's labels and map change rarely: keep the last copy for when the network is away.
async function loadSite() {
  if (state.site) return;
  try {
    [state.site, state.grids] = await Promise.all([api.get("/site"), api.get("/grids")]);
    localStorage.setItem("gw.app.site", JSON.stringify({ site: state.site, grids: state.grids }));
  } catch (e) {
    const saved = JSON.parse(localStorage.getItem("gw.app.site") || "null");
    if (!(e instanceof NetworkError) || !saved) throw e;
    state.site = saved.site;
    state.grids = saved.grids;
  }
  setTimeZone(state.site.timezone);
}

// What the worker will see once the queued actions reach the server.
const QUEUED_STATUS = { accept: "accepted", resolve: "resolved", reject: "rejected", decline: "declined" };

function withQueued(tickets) {
  return tickets
    .map((tk) => {
      const kinds = state.pending[tk.id] || [];
      const last = kinds.map((k) => QUEUED_STATUS[k]).filter(Boolean).pop();
      return last ? { ...tk, status: last } : tk;
    })
    .filter((tk) => tk.status !== "declined");
}

async function refreshList() {
  if (!api.token) return;
  try {
    await loadSite();
    const statuses = state.tab === "todo" ? TODO : DONE;
    const sort = state.tab === "todo" ? "priority" : "-opened_at";
    const page = await api.get("/tickets" + qs({ status: statuses, sort, limit: 100 }));
    state.tickets = page.items;
    localStorage.setItem("gw.app.tickets." + state.tab, JSON.stringify(page.items));
    if (state.tab === "todo") updateBadge();
    else refreshBadgeOnly();
    show($("#banner"), false);
  } catch (e) {
    if (e instanceof NetworkError) {
      const cached = localStorage.getItem("gw.app.tickets." + state.tab);
      if (cached) state.tickets = JSON.parse(cached);
      banner(t("net.offline_list"));
    } else if (!(e instanceof ApiError && e.status === 401)) {
      const said = describeError(e);
      banner(said.text, said.detail);
    }
  }
  if (!$("#view-list").hidden) renderList();
}

async function refreshBadgeOnly() {
  try {
    const page = await api.get("/tickets" + qs({ status: "assigned", limit: 1 }));
    const badge = $("#badge");
    badge.textContent = String(page.total);
    show(badge, page.total > 0);
  } catch (e) {
    // the badge waits for the next refresh
  }
}

function banner(text, detail = "") {
  const b = $("#banner");
  fillMessage(b, text, detail);
  show(b, Boolean(text));
}

// -- rendering -------------------------------------------------------------------------------
function statusChip(status) {
  const span = document.createElement("span");
  span.className = "status s-" + status;
  span.textContent = t("status." + status);
  return span;
}

function prioChip(p) {
  const span = document.createElement("span");
  span.className = "prio p" + p;
  span.textContent = "P" + p;
  span.title = t("priority.title", { p });
  return span;
}

function renderList() {
  const ul = $("#tickets");
  ul.replaceChildren();
  document.querySelectorAll(".tab").forEach((b) => b.classList.toggle("active", b.dataset.tab === state.tab));
  const statuses = state.tab === "todo" ? TODO : DONE;
  const items = withQueued(state.tickets).filter((x) => statuses.includes(x.status));
  show($("#empty"), items.length === 0);
  for (const tk of items) {
    const li = document.createElement("li");
    li.className = "ticket" + (tk.status === "assigned" ? " new" : "");
    li.dataset.id = tk.id;
    li.tabIndex = 0;
    const top = document.createElement("div");
    top.className = "row";
    const name = document.createElement("strong");
    name.textContent = category(tk.category);
    top.append(prioChip(tk.priority), name, statusChip(tk.status));
    const sla = document.createElement("div");
    sla.className = "sla";
    sla.dataset.deadline = tk.deadline;
    sla.dataset.status = tk.status;
    const meta = document.createElement("div");
    meta.className = "muted";
    meta.textContent = `#${tk.id} · ${gridName(tk.grid_id)} · ${formatTime(tk.opened_at)}`;
    li.append(top, sla, meta);
    if (state.pending[tk.id]) {
      const p = document.createElement("div");
      p.className = "pending";
      p.textContent = t("queue.pending_here");
      li.append(p);
    }
    li.addEventListener("click", () => { location.hash = `#/t/${tk.id}`; });
    ul.append(li);
  }
  tickSla();
}

function button(label, cls, onClick, id) {
  const b = document.createElement("button");
  b.className = cls;
  b.textContent = label;
  if (id) b.id = id;
  b.addEventListener("click", onClick);
  return b;
}

function mapLink(d) {
  const label = encodeURIComponent(t("detail.map_label", { id: d.id }));
  if (/iPhone|iPad|iPod/.test(navigator.userAgent)) {
    return `https://maps.apple.com/?ll=${d.lat},${d.lon}&q=${label}`;
  }
  return `geo:${d.lat},${d.lon}?q=${d.lat},${d.lon}(${label})`;
}

function renderDetail() {
  const d = state.detail;
  if (!d) return;
  $("#d-id").textContent = d.id;
  $("#d-category").textContent = category(d.category);
  $("#d-priority").replaceWith(Object.assign(prioChip(d.priority), { id: "d-priority" }));
  $("#d-status").replaceWith(Object.assign(statusChip(d.status), { id: "d-status" }));
  const sla = $("#d-sla");
  sla.dataset.deadline = d.deadline;
  sla.dataset.status = d.status;
  $("#d-grid").textContent = gridName(d.grid_id);
  $("#d-source").textContent = t("source." + d.source);
  $("#d-coords").textContent = `${d.lat.toFixed(5)}, ${d.lon.toFixed(5)}`;
  $("#d-maplink").href = mapLink(d);
  show($("#d-pending"), Boolean(state.pending[d.id]));
  const markers = [{ lat: d.lat, lon: d.lon, kind: "ticket", title: category(d.category) }];
  if (state.position) markers.push({ ...state.position, kind: "me", title: t("detail.me") });
  drawGridMap($("#d-map"), state.grids, {
    highlight: d.grid_id, markers, label: (g) => siteLabel(g), title: (g) => siteLabel(g),
  });
  const audit = $("#d-audit");
  audit.replaceChildren();
  for (const a of d.audit || []) {
    const li = document.createElement("li");
    const why = reasonText(a, { grid: gridName });
    li.textContent = `${formatTime(a.at)} ${t("transition." + a.transition)}` + (why ? ` — ${why}` : "");
    audit.append(li);
  }
  const actions = $("#d-actions");
  actions.replaceChildren();
  const info = $("#d-info");
  show(info, false);
  if (d.status === "assigned") {
    actions.append(
      button(t("action.accept"), "primary big", () => act("accept", d.id), "act-accept"),
      button(t("action.decline"), "secondary", () => { location.hash = `#/t/${d.id}/decline`; }, "act-decline"),
      button(t("action.false_alarm"), "secondary", () => { location.hash = `#/t/${d.id}/reject`; }, "act-reject"),
    );
  } else if (d.status === "accepted") {
    if (!d.arrived_at) actions.append(button(t("action.arrived"), "secondary", () => act("arrived", d.id), "act-arrived"));
    actions.append(
      button(t("action.resolve"), "primary big", () => { location.hash = `#/t/${d.id}/resolve`; }, "act-resolve"),
      button(t("action.false_alarm"), "secondary", () => { location.hash = `#/t/${d.id}/reject`; }, "act-reject"),
    );
  } else {
    info.textContent = t("detail.info_" + d.status);
    show(info);
  }
  tickSla();
}

async function renderEvidence(d) {
  releaseImages();
  const img = $("#d-snapshot");
  const photos = $("#d-photos");
  photos.replaceChildren();
  show(img, false);
  show($("#d-snapshot-none"), true);
  const snap = (d.evidence || []).find((e) => e.kind === "snapshot") || (d.evidence || []).find((e) => e.kind === "crop");
  try {
    if (snap) {
      const url = await api.imageUrl(snap.url);
      state.objectUrls.push(url);
      img.src = url;
      img.alt = t("detail.snapshot_alt");
      show(img);
      show($("#d-snapshot-none"), false);
    }
    for (const e of (d.evidence || []).filter((x) => x.kind === "after_photo" || x.kind === "verify")) {
      const url = await api.imageUrl(e.url);
      state.objectUrls.push(url);
      const fig = document.createElement("figure");
      const im = document.createElement("img");
      im.src = url;
      im.alt = t("evidence." + e.kind);
      const cap = document.createElement("figcaption");
      cap.textContent = t("evidence." + e.kind);
      fig.append(im, cap);
      photos.append(fig);
    }
  } catch (e) {
    console.warn("evidence not loaded", e);
  }
}

// Re-read the ticket on screen after a change, without leaving the view the worker is in.
function refreshDetail(id) {
  if (state.detail && state.detail.id === id && !$("#view-detail").hidden) openDetail(id);
}

async function openDetail(id) {
  showView("detail");
  try {
    await loadSite();
    state.detail = await api.get(`/tickets/${id}`);
    renderDetail();
    renderEvidence(state.detail);
  } catch (e) {
    const cached = state.tickets.find((x) => x.id === id);
    if (e instanceof NetworkError && cached) {
      state.detail = { ...cached, audit: [], evidence: [] };
      renderDetail();
      banner(t("net.offline_detail"));
    } else if (e instanceof ApiError && e.status === 404) {
      toast(t("detail.gone", { id }));
      location.hash = "#/";
    } else if (!(e instanceof ApiError && e.status === 401)) {
      const said = describeError(e);
      banner(said.text, said.detail);
    }
  }
}

// -- resolve with photo ----------------------------------------------------------------------
// Phone photos are large; shrink to at most 1600 px JPEG before queueing (slow networks).
async function shrinkPhoto(file) {
  try {
    const bitmap = await createImageBitmap(file);
    const scale = Math.min(1, 1600 / Math.max(bitmap.width, bitmap.height));
    const canvas = document.createElement("canvas");
    canvas.width = Math.round(bitmap.width * scale);
    canvas.height = Math.round(bitmap.height * scale);
    canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    return await new Promise((resolve) => canvas.toBlob((b) => resolve(b || file), "image/jpeg", 0.82));
  } catch (e) {
    console.warn("photo kept as taken", e);
    return file;
  }
}

function setupResolve() {
  $("#photo").addEventListener("change", async (ev) => {
    const file = ev.target.files && ev.target.files[0];
    if (!file) return;
    state.photo = await shrinkPhoto(file);
    const url = URL.createObjectURL(state.photo);
    state.objectUrls.push(url);
    const prev = $("#photo-preview");
    prev.src = url;
    prev.alt = t("evidence.after_photo");
    show(prev);
    show($("#resolve-error"), false);
  });
  $("#resolve-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const id = state.detail && state.detail.id;
    if (!id) return;
    if (!state.photo) {
      $("#resolve-error").textContent = t("resolve.need_photo");
      show($("#resolve-error"));
      return;
    }
    const note = ev.target.note.value.trim();
    await act("resolve", id, { photo: state.photo, note: note || undefined });
    state.photo = null;
    ev.target.reset();
    show($("#photo-preview"), false);
  });
}

// -- reasons (decline, false alarm) -----------------------------------------------------------
const PRESETS = {
  decline: ["reason.decline_busy", "reason.decline_far", "reason.decline_equipment"],
  reject: ["reason.reject_nothing", "reason.reject_misread", "reason.reject_duplicate"],
};

function openReason(kind, id) {
  state.reasonFor = { kind, id };
  showView("reason");
  $("#reason-heading").textContent = t(kind === "decline" ? "reason.heading_decline" : "reason.heading_reject", { id });
  const box = $("#reason-presets");
  box.replaceChildren();
  const area = $("#reason-form").reason;
  area.value = "";
  for (const key of PRESETS[kind]) {
    box.append(button(t(key), "chip-btn", (e) => { e.preventDefault(); area.value = t(key); }));
  }
  show($("#reason-error"), false);
}

function setupReason() {
  $("#reason-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const reason = ev.target.reason.value.trim();
    if (!reason) {
      $("#reason-error").textContent = t("reason.required");
      show($("#reason-error"));
      return;
    }
    const { kind, id } = state.reasonFor;
    await act(kind, id, { reason });
  });
}

// -- views and routing -----------------------------------------------------------------------
function showView(name) {
  document.querySelectorAll(".view").forEach((v) => show(v, v.id === "view-" + name));
  show($("#back"), name !== "list" && name !== "login");
  window.scrollTo(0, 0);
}

function route() {
  if (!api.token) {
    needLogin();
    return;
  }
  const m = location.hash.match(/^#\/t\/(\d+)(?:\/(resolve|decline|reject))?$/);
  if (!m) {
    state.detail = null;
    releaseImages();
    showView("list");
    renderList();
    refreshList();
    return;
  }
  const id = Number(m[1]);
  if (!m[2]) openDetail(id);
  else if (m[2] === "resolve") {
    if (!state.detail || state.detail.id !== id) openDetail(id).then(() => showView("resolve"));
    else showView("resolve");
  } else openReason(m[2], id);
}

function needLogin(message) {
  stopStream();
  api.session = null;
  showView("login");
  const err = $("#login-error");
  err.textContent = message || "";
  show(err, Boolean(message));
}

function setupLogin() {
  $("#login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    unlockAudio();
    const f = ev.target;
    const err = $("#login-error");
    try {
      const s = await api.login(f.username.value.trim(), f.password.value);
      if (s.role !== "worker") {
        api.session = null;
        fillMessage(err, t("login.workers_only"));
        show(err);
        return;
      }
      f.password.value = "";
      afterLogin();
    } catch (e) {
      if (e instanceof ApiError && e.status === 429) fillMessage(err, t("login.locked"));
      else if (e instanceof ApiError && e.status === 401) fillMessage(err, t("login.wrong"));
      else if (e instanceof NetworkError) fillMessage(err, t("net.offline_login"));
      else showError(err, e);
      show(err);
    }
  });
  $("#logout").addEventListener("click", async () => {
    stopStream();
    try {
      await api.logout();
    } catch (e) {
      api.session = null;
    }
    await queue.clear();
    state.site = null;
    state.tickets = [];
    updateBadge();
    needLogin();
  });
  $("#show-password").addEventListener("click", () => show($("#password-form"), $("#password-form").hidden));
  $("#password-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const msg = $("#password-msg");
    try {
      api.session = await api.post("/auth/password", { current_password: f.current.value, new_password: f.new.value });
      f.reset();
      show(f, false);
      toast(t("password.changed"), "ok");
      startStream();
    } catch (e) {
      if (e instanceof ApiError && e.status === 403) fillMessage(msg, t("password.wrong_current"));
      else showError(msg, e);
      show(msg);
    }
  });
}

function afterLogin() {
  const s = api.session;
  $("#who").textContent = t("list.who", { name: s.display_name, id: s.username });
  location.hash = location.hash || "#/";
  route();
  startStream();
  queue.flush();
  watchPosition();
}

// Best effort: the phone's position helps pick the nearest worker; never queued.
function watchPosition() {
  if (!navigator.geolocation) return;
  navigator.geolocation.watchPosition(
    (pos) => {
      state.position = { lat: pos.coords.latitude, lon: pos.coords.longitude };
      if (Date.now() - state.lastPositionSent < 60000 || !api.token) return;
      state.lastPositionSent = Date.now();
      api.request("/workers/me/position", {
        method: "PUT",
        json: { lat: state.position.lat, lon: state.position.lon, accuracy_m: Math.min(100000, pos.coords.accuracy || 0) },
      }).catch(() => {});
    },
    () => {},
    { enableHighAccuracy: false, maximumAge: 60000 },
  );
}

async function switchLang() {
  await loadLang(otherLang());
  show($("#toast"), false);
  $("#lang").textContent = t("lang.switch");
  setNet($("#net").dataset.state || "connecting");
  if (api.session) $("#who").textContent = t("list.who", { name: api.session.display_name, id: api.session.username });
  queue.changed();
  if (!$("#view-detail").hidden) renderDetail();
  if (!$("#view-list").hidden) renderList();
  if (!$("#view-reason").hidden && state.reasonFor) openReason(state.reasonFor.kind, state.reasonFor.id);
  updateBadge();
}

async function main() {
  await loadLang(storedLang());
  $("#lang").addEventListener("click", switchLang);
  $("#back").addEventListener("click", () => history.length > 1 ? history.back() : (location.hash = "#/"));
  document.querySelectorAll(".tab").forEach((b) => b.addEventListener("click", () => {
    state.tab = b.dataset.tab;
    state.tickets = [];
    renderList();
    refreshList();
  }));
  api.onUnauthorized = () => needLogin(t("login.expired"));
  setupLogin();
  setupResolve();
  setupReason();
  setNet(navigator.onLine ? "connecting" : "offline");
  window.addEventListener("hashchange", route);
  window.addEventListener("online", () => { queue.flush(); startStream(); });
  window.addEventListener("offline", () => setNet("offline"));
  document.addEventListener("click", unlockAudio, { once: true });
  setInterval(tickSla, 1000);
  setInterval(() => queue.flush(), 15000);
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/app/sw.js", { scope: "/app/" }).catch((e) => console.warn("no service worker", e));
  }
  await queue.changed();
  if (api.token) afterLogin();
  else needLogin();
  document.body.dataset.ready = "1";
}

main();

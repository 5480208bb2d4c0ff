// The organiser's live sale dashboard: sold / held / available over time from a listener on the
// event document (its summary), sales per second computed from it, and the server-side figures
// (emails, dead letters, admission queue, answer latency) from GET /v1/events/{id}/dashboard,
// polled every POLL_MS while the page is open.

import { collection, doc, limit, onSnapshot, orderBy, query, where } from 'firebase/firestore';
import { mountAuthPanel } from './auth-panel.js';
import { callApi, el, startFirebase } from './client.js';

const POLL_MS = 2000;
const RATE_WINDOW_MS = 5000;
const probe = (window.boxoffice = { points: [], figures: null, errors: [] });
let fb;
let stopEvent = null;
let pollTimer = null;
let current = null;
const $ = (id) => document.getElementById(id);

function say(text) {
  $('page-message').textContent = text;
  if (text) probe.errors.push(text);
}

// Without ?event= the dashboard follows the newest event (a demo sale just started by
// `boxoffice simulate`) until the organiser picks one.
let picked = new URLSearchParams(location.search).get('event');

function listenToEvents() {
  const q = query(collection(fb.db, 'events'), where('status', 'in', ['on_sale', 'paused', 'closed']), orderBy('starts_at'), limit(50));
  onSnapshot(q, (snap) => {
    const picker = $('event-picker');
    const created = (d) => d.data().created_at?.toMillis?.() ?? 0;
    const docs = [...snap.docs].sort((a, b) => created(b) - created(a));
    picker.replaceChildren(...docs.map((d) => el('option', { value: d.id }, `${d.data().name} (${d.id.slice(0, 11)})`)));
    const ids = docs.map((d) => d.id);
    const pick = ids.includes(picked) ? picked : ids[0];
    if (pick) {
      picker.value = pick;
      if (pick !== current) watch(pick);
    }
  }, (err) => say(`Cannot list events: ${err.message}`));
}

function watch(eventId) {
  current = eventId;
  probe.points = [];
  if (stopEvent) stopEvent();
  stopEvent = onSnapshot(doc(fb.db, 'events', eventId), (snap) => {
    const data = snap.data() || {};
    const s = data.summary || {};
    const capacity = s.capacity ?? data.capacity ?? 0;
    probe.points.push({ t: Date.now(), sold: s.sold ?? 0, held: s.held ?? 0, available: s.available ?? capacity, capacity });
    const sale = data.status === 'on_sale' && s.available === 0 ? 'sold_out' : data.status;
    $('sale-state').textContent = sale.replace('_', ' ');
    $('sale-state').dataset.state = sale;
    render();
  }, (err) => say(`Cannot watch the event: ${err.message}`));
  clearInterval(pollTimer);
  poll();
  pollTimer = setInterval(poll, POLL_MS);
}

async function poll() {
  if (!current) return;
  try {
    const { body } = await callApi(fb.auth, `/v1/events/${current}/dashboard`);
    probe.figures = body;
    say('');
    renderFigures(body);
  } catch (err) {
    say(err.message);
  }
}

function salesPerSecond(points) {
  if (points.length < 2) return 0;
  const last = points[points.length - 1];
  const since = last.t - RATE_WINDOW_MS;
  let first = points[0];
  for (const p of points) if (p.t <= since) first = p;
  const dt = (last.t - first.t) / 1000;
  return dt > 0 ? Math.max(0, last.sold - first.sold) / dt : 0;
}

function render() {
  const points = probe.points;
  const last = points[points.length - 1];
  if (!last) return;
  $('fig-sold').textContent = last.sold;
  $('fig-held').textContent = last.held;
  $('fig-available').textContent = `${last.available} / ${last.capacity}`;
  $('fig-rate').textContent = salesPerSecond(points).toFixed(1);
  drawChart($('chart'), points);
}

function renderFigures(f) {
  $('fig-emails').textContent = `${f.emails.sent}${f.emails.pending ? ` (+${f.emails.pending} queued)` : ''}`;
  $('fig-dead').textContent = f.dead_letters.messages + f.dead_letters.inventory_changes;
  if (f.queue) {
    const q = f.queue;
    // Estimates from the allocator's progress (docs/decisions.md, "A queued request's place").
    if (!q.allocator) $('fig-queue').textContent = 'no allocator';
    else if (q.length == null) $('fig-queue').textContent = '–';
    else $('fig-queue').textContent = q.length === 0 ? '0' : `≈ ${q.length}${q.oldest_wait_s ? ` (${q.oldest_wait_s} s)` : ''}`;
    const ms = (v) => (v == null ? '–' : `${Math.round(v)} ms`);
    $('fig-latency').textContent = `${ms(q.answer_p50_ms)} / ${ms(q.answer_p99_ms)}`;
    $('fig-answers').textContent = q.answers_per_s == null ? '–' : q.answers_per_s.toFixed(1);
    $('board-note').textContent = q.allocator
      ? `Queue: requests waiting, estimated from the allocator's pace (oldest wait in brackets); answers per second over the last 10 s; answer latency over the last ${q.window_s} s (${q.answered} answers).`
      : 'No allocator holds this event\'s queue: requests wait, and keep their place, until one runs (boxoffice worker).';
  } else {
    $('fig-queue').textContent = 'n/a';
    $('fig-latency').textContent = 'n/a';
    $('fig-answers').textContent = 'n/a';
    $('board-note').textContent = f.queue_note || '';
  }
}

function drawChart(canvas, points) {
  const ctx = canvas.getContext('2d');
  const w = canvas.width;
  const h = canvas.height;
  const pad = { l: 48, r: 12, t: 12, b: 28 };
  ctx.clearRect(0, 0, w, h);
  const t0 = points[0].t;
  const t1 = Math.max(points[points.length - 1].t, t0 + 10_000);
  const top = Math.max(1, ...points.map((p) => p.capacity));
  const x = (t) => pad.l + ((t - t0) / (t1 - t0)) * (w - pad.l - pad.r);
  const y = (v) => h - pad.b - (v / top) * (h - pad.t - pad.b);
  ctx.strokeStyle = '#d9dee5';
  ctx.fillStyle = '#5b6470';
  ctx.font = '12px system-ui, sans-serif';
  for (let i = 0; i <= 4; i++) {
    const v = Math.round((top * i) / 4);
    ctx.beginPath(); ctx.moveTo(pad.l, y(v)); ctx.lineTo(w - pad.r, y(v)); ctx.stroke();
    ctx.fillText(String(v), 4, y(v) + 4);
  }
  ctx.fillText(`${Math.round((t1 - t0) / 1000)} s`, w - pad.r - 40, h - 8);
  ctx.fillText('0 s', pad.l, h - 8);
  const styles = getComputedStyle(document.documentElement);
  for (const [key, colour] of [['sold', '--ok'], ['held', '--held'], ['available', '--accent']]) {
    ctx.strokeStyle = styles.getPropertyValue(colour).trim();
    ctx.lineWidth = 2.5;
    ctx.beginPath();
    points.forEach((p, i) => {
      // a step line: a count holds until the next snapshot changes it
      if (i === 0) ctx.moveTo(x(p.t), y(p[key]));
      else { ctx.lineTo(x(p.t), y(points[i - 1][key])); ctx.lineTo(x(p.t), y(p[key])); }
    });
    ctx.lineTo(x(t1), y(points[points.length - 1][key]));
    ctx.stroke();
  }
}

function onUser(user, claims) {
  const organiser = Boolean(user && claims.organiser);
  if (fb.config.demo_organiser) $('demo-hint').hidden = Boolean(user);
  $('board').hidden = !organiser;
  if (user && !organiser) say('This account is not an organiser: the dashboard is for organisers only.');
  else say('');
  if (organiser && !current) listenToEvents();
}

async function main() {
  try {
    fb = await startFirebase();
  } catch (err) {
    say(`The dashboard cannot start: ${err.message}`);
    return;
  }
  const demo = fb.config.demo_organiser;
  if (demo) {
    $('demo-hint').hidden = false;
    $('demo-hint').textContent = `Local stack: sign in as ${demo.email} with password ${demo.password} (an organiser in the Auth emulator).`;
  }
  mountAuthPanel($('auth'), fb.auth, onUser);
  $('event-picker').addEventListener('change', (e) => {
    picked = e.target.value;
    watch(picked);
  });
  // Redraw so the time axis moves on while nothing sells.
  setInterval(render, 1000);
  probe.ready = true;
}

main();

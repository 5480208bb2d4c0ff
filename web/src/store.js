// The storefront: events on sale with live availability (Firestore listeners under
// firestore.rules), sign in, buy through the API, my orders and tickets (live), cancel, waitlist.
//
// `window.boxoffice` keeps timings for the browser tests and the figures script: one entry per
// event snapshot received, and per purchase the click, the API's answer and the order shown.

import {
  collection,
  doc,
  getDoc,
  limit,
  onSnapshot,
  orderBy,
  query,
  where,
} from 'firebase/firestore';
import { mountAuthPanel } from './auth-panel.js';
import { ApiError, callApi, el, money, startFirebase } from './client.js';
import { buy, describeQueue, pendingPurchase } from './purchase.js';

const PUBLISHED = ['on_sale', 'paused', 'closed'];
const STATE_LABEL = { on_sale: 'On sale', sold_out: 'Sold out', paused: 'Paused', closed: 'Closed' };

const probe = (window.boxoffice = { snapshots: [], purchases: [], errors: [] });
const state = { user: null, events: new Map(), orders: [], tickets: [], waitlist: new Map(), unsubscribe: [] };
let fb;

const $ = (id) => document.getElementById(id);

function say(target, text, kind = 'info') {
  target.textContent = text;
  target.dataset.kind = kind;
}

// ---------------------------------------------------------------- events and availability

function listenToEvents() {
  const q = query(collection(fb.db, 'events'), where('status', 'in', PUBLISHED), orderBy('starts_at'), limit(50));
  onSnapshot(q, (snap) => {
    const arrived = Date.now();
    for (const change of snap.docChanges()) {
      const data = change.doc.data();
      if (change.type === 'removed') {
        state.events.delete(change.doc.id);
        continue;
      }
      state.events.set(change.doc.id, { id: change.doc.id, ...data });
      if (change.type === 'added' && state.user) listenToWaitlist(state.user, change.doc.id);
      const s = data.summary || {};
      probe.snapshots.push({
        event_id: change.doc.id, arrived, as_of: s.as_of ? s.as_of.toMillis() : null,
        sold: s.sold ?? null, available: s.available ?? null, from_cache: snap.metadata.fromCache,
      });
    }
    renderEvents();
  }, (err) => showError(`Cannot load events: ${err.message}`));
}

function availabilityOf(event) {
  const s = event.summary || {};
  const capacity = s.capacity ?? event.capacity;
  const available = s.available ?? capacity;
  let sale = event.status;
  if (sale === 'on_sale' && available === 0) sale = 'sold_out';
  return { capacity, available, held: s.held ?? 0, sold: s.sold ?? 0, sale, lowStock: Boolean(s.low_stock) };
}

function renderEvents() {
  const list = $('events');
  const seen = new Set();
  for (const event of state.events.values()) {
    seen.add(event.id);
    let card = document.getElementById(`event-${event.id}`);
    if (!card) {
      card = buildCard(event);
      list.append(card);
    }
    updateCard(card, event);
  }
  for (const card of [...list.children]) if (!seen.has(card.dataset.eventId)) card.remove();
  $('no-events').textContent = 'No events on sale yet.';
  $('no-events').hidden = state.events.size > 0;
}

function buildCard(event) {
  const id = event.id;
  const qty = el('select', { id: `qty-${id}`, name: 'quantity', class: 'qty' });
  const buyButton = el('button', { type: 'submit', class: 'buy', id: `buy-${id}` }, 'Buy');
  const waitButton = el('button', { type: 'button', class: 'waitlist secondary', id: `wait-${id}`,
    onclick: () => joinWaitlist(id) }, 'Join the waitlist');
  const form = el('form', { class: 'buy-form', onsubmit: (e) => { e.preventDefault(); purchase(id); } },
    el('label', { for: `qty-${id}` }, 'Tickets'), qty, buyButton, waitButton);
  return el('li', { class: 'event', id: `event-${id}`, dataset: { eventId: id } },
    el('h3', { class: 'name' }),
    el('p', { class: 'where' }),
    el('p', { class: 'availability' },
      el('span', { class: 'badge' }),
      el('span', { class: 'left', 'aria-live': 'polite' })),
    el('meter', { class: 'meter', min: '0', 'aria-label': 'tickets left' }),
    form,
    el('p', { class: 'waitlist-state', role: 'status' }),
    el('p', { class: 'message', role: 'status', 'aria-live': 'polite', id: `msg-${id}` }));
}

function updateCard(card, event) {
  const a = availabilityOf(event);
  const id = event.id;
  card.querySelector('.name').textContent = event.name;
  const when = event.starts_at?.toDate ? event.starts_at.toDate() : null;
  card.querySelector('.where').textContent =
    `${event.venue} · ${when ? when.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' }) : ''} · ${money(event.price, event.currency)}`;
  const badge = card.querySelector('.badge');
  badge.textContent = STATE_LABEL[a.sale] || a.sale;
  badge.dataset.state = a.sale;
  card.querySelector('.left').textContent =
    `${a.available} of ${a.capacity} left${a.held ? ` · ${a.held} in carts` : ''}${a.lowStock ? ' · selling fast' : ''}`;
  card.dataset.available = a.available;
  const meter = card.querySelector('.meter');
  meter.max = a.capacity;
  meter.value = a.available;

  const qty = card.querySelector('.qty');
  const most = Math.max(1, Math.min(event.per_order_max ?? 10, a.available || 1));
  if (qty.options.length !== most) {
    const chosen = Number(qty.value) || 1;
    qty.replaceChildren(...Array.from({ length: most }, (_, i) => el('option', { value: i + 1 }, i + 1)));
    qty.value = String(Math.min(chosen, most));
  }
  const signedIn = Boolean(state.user);
  const buyButton = card.querySelector('.buy');
  const busy = buyButton.dataset.busy === '1';
  buyButton.disabled = busy || !signedIn || a.sale !== 'on_sale';
  buyButton.textContent = busy ? 'Buying…' : signedIn ? 'Buy' : 'Sign in to buy';
  qty.disabled = !signedIn || a.sale !== 'on_sale';
  const waitButton = card.querySelector('.waitlist');
  const entry = state.waitlist.get(id);
  waitButton.hidden = !(signedIn && a.sale === 'sold_out' && !entry);
  const waitState = card.querySelector('.waitlist-state');
  if (entry?.status === 'offered') {
    say(waitState, 'Tickets came back for you: buy them now, before someone else does.', 'success');
  } else if (entry?.status === 'waiting') {
    say(waitState, "You are on the waitlist. We'll email you when tickets come back.", 'info');
  } else {
    waitState.textContent = '';
  }
}

// ---------------------------------------------------------------- buying

async function purchase(eventId) {
  const card = $(`event-${eventId}`);
  const button = card.querySelector('.buy');
  const message = $(`msg-${eventId}`);
  if (!state.user || button.dataset.busy === '1') return; // a double click is one purchase
  const quantity = Number(card.querySelector('.qty').value) || 1;
  const record = { event_id: eventId, quantity, clicked: performance.now(), answered: null, shown: null, order_id: null, outcome: null, places: [] };
  probe.purchases.push(record);
  button.dataset.busy = '1';
  updateCard(card, state.events.get(eventId));
  say(message, 'Buying…');
  try {
    const order = await buy(fb, eventId, quantity, {
      onQueued: (queued) => {
        record.queued = true;
        record.places.push({ state: queued.state, ahead: queued.ahead, eta_s: queued.etaS });
        say(message, describeQueue(queued, queued.waitedMs), 'queued');
      },
    });
    record.answered = performance.now();
    record.order_id = order.id;
    record.outcome = 'sold';
    say(message, `Done: ${order.quantity} ticket${order.quantity > 1 ? 's' : ''} for ${money(order.amount, order.currency)}. See My orders.`, 'success');
    markShown(order.id);
  } catch (err) {
    record.answered = performance.now();
    record.outcome = err.code || 'error';
    const retry = err instanceof ApiError && err.retryable ? ' Press Buy again: it will not buy twice.' : '';
    say(message, (err instanceof ApiError ? err.message : `Something went wrong: ${err.message}`) + retry,
      err.code === 'sold_out' || err.code === 'not_enough_tickets' ? 'warning' : 'error');
  } finally {
    button.dataset.busy = '0';
    updateCard(card, state.events.get(eventId));
  }
}

function markShown(orderId) {
  const shownAt = performance.now();
  if (!state.orders.some((o) => o.id === orderId)) return;
  for (const r of probe.purchases) if (r.order_id === orderId && r.shown === null && r.answered !== null) r.shown = shownAt;
}

async function joinWaitlist(eventId) {
  const message = $(`msg-${eventId}`);
  try {
    const { body } = await callApi(fb.auth, `/v1/events/${eventId}/waitlist`, { method: 'PUT' });
    say(message, body.position ? `You are number ${body.position} on the waitlist.` : 'You are on the waitlist.', 'info');
  } catch (err) {
    say(message, err.message, 'error');
  }
}

async function cancel(orderId, button) {
  button.disabled = true;
  const message = $('orders-message');
  try {
    await callApi(fb.auth, `/v1/orders/${orderId}/cancel`, { method: 'POST' });
    say(message, 'Order cancelled: your tickets went back on sale and a refund is on its way.', 'success');
  } catch (err) {
    say(message, err.message, 'error');
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- my orders and tickets (live)

function listenToMine(user) {
  const orders = query(collection(fb.db, 'orders'), where('user_id', '==', user.uid), orderBy('created_at', 'desc'), limit(20));
  state.unsubscribe.push(onSnapshot(orders, (snap) => {
    state.orders = snap.docs.map((d) => ({ id: d.id, ...d.data() }));
    renderOrders();
    for (const o of state.orders) markShown(o.id);
  }, (err) => showError(`Cannot load your orders: ${err.message}`)));
  const tickets = query(collection(fb.db, 'tickets'), where('user_id', '==', user.uid), limit(100));
  state.unsubscribe.push(onSnapshot(tickets, (snap) => {
    state.tickets = snap.docs.map((d) => ({ id: d.id, ...d.data() })).sort((a, b) => (a.id < b.id ? 1 : -1));
    renderTickets();
  }, (err) => showError(`Cannot load your tickets: ${err.message}`)));
  for (const id of state.events.keys()) listenToWaitlist(user, id);
}

function listenToWaitlist(user, eventId) {
  if (state.waitlist.has(`listening:${eventId}`)) return;
  state.waitlist.set(`listening:${eventId}`, true);
  state.unsubscribe.push(onSnapshot(doc(fb.db, 'events', eventId, 'waitlist', user.uid), (snap) => {
    if (snap.exists()) state.waitlist.set(eventId, snap.data());
    else state.waitlist.delete(eventId);
    const event = state.events.get(eventId);
    if (event) updateCard($(`event-${eventId}`), event);
  }, () => {}));
}

const eventName = (id) => state.events.get(id)?.name ?? id;

function renderOrders() {
  const rows = state.orders.map((o) => {
    const cancellable = o.status !== 'cancelled';
    const button = el('button', { type: 'button', class: 'secondary cancel', 'aria-label': `Cancel order for ${eventName(o.event_id)}` }, 'Cancel');
    button.addEventListener('click', () => cancel(o.id, button));
    return el('li', { class: 'order', id: `order-${o.id}`, dataset: { status: o.status } },
      el('span', { class: 'what' }, `${eventName(o.event_id)}: ${o.quantity - (o.cancelled_quantity || 0)} of ${o.quantity} ticket(s)`),
      el('span', { class: 'amount' }, money(o.amount, o.currency)),
      el('span', { class: 'status' }, o.status.replace('_', ' ')),
      cancellable ? button : null);
  });
  $('orders').replaceChildren(...rows);
  $('no-orders').hidden = rows.length > 0;
}

function renderTickets() {
  const rows = state.tickets.map((t) => el('li', { class: 'ticket', id: `ticket-${t.id}`, dataset: { status: t.status } },
    el('span', { class: 'what' }, eventName(t.event_id)),
    el('code', { class: 'code' }, t.code),
    el('span', { class: 'status' }, t.status === 'valid' ? 'valid' : 'void')));
  $('tickets').replaceChildren(...rows);
  $('no-tickets').hidden = rows.length > 0;
}

// ---------------------------------------------------------------- wiring

function showError(text) {
  probe.errors.push(text);
  say($('page-message'), text, 'error');
}

function onUser(user) {
  state.unsubscribe.splice(0).forEach((stop) => stop());
  state.waitlist.clear();
  state.user = user;
  state.orders = [];
  state.tickets = [];
  $('mine').hidden = !user;
  if (user) {
    listenToMine(user);
    for (const id of state.events.keys()) {
      if (pendingPurchase(user.uid, id)?.location) purchase(id); // resume a queued purchase
    }
  }
  renderEvents();
}

async function main() {
  try {
    fb = await startFirebase();
  } catch (err) {
    showError(`The store cannot start: ${err.message}`);
    return;
  }
  mountAuthPanel($('auth'), fb.auth, onUser);
  listenToEvents();
  // For the browser tests: read a document with this page's SDK and sign-in (the rules decide).
  probe.readDocument = async (path) => {
    try {
      const snap = await getDoc(doc(fb.db, path));
      return { ok: true, exists: snap.exists(), data: snap.data() ?? null };
    } catch (err) {
      return { ok: false, code: err.code };
    }
  };
  probe.idToken = () => fb.auth.currentUser?.getIdToken() ?? null;
  probe.ready = true;
}

main();

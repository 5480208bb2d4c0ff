// Buying through the API exactly once: the Idempotency-Key is made before the first attempt and
// kept (sessionStorage) until the purchase has a definitive answer, so a double click, a retry
// after a network error, or a reload while queued all ask for the same order.
//
// Answers: 201 with the order; 202 with `Location: /v1/purchases/{id}` when the request is queued
// (the admission queue): the page then polls that location, honouring Retry-After, and reports
// each state (place in line) until the answer is an order or a refusal.

import { ApiError, callApi, sleep } from './client.js';

const storageKey = (uid, eventId) => `boxoffice.purchase.${uid}.${eventId}`;

function newKey() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  return `k-${Date.now()}-${Math.random().toString(36).slice(2)}`;
}

/** The purchase in progress for (user, event), if a previous attempt left one. */
export function pendingPurchase(uid, eventId) {
  try {
    return JSON.parse(sessionStorage.getItem(storageKey(uid, eventId)) || 'null');
  } catch {
    return null;
  }
}

function keep(uid, eventId, pending) {
  sessionStorage.setItem(storageKey(uid, eventId), JSON.stringify(pending));
}

function forget(uid, eventId) {
  sessionStorage.removeItem(storageKey(uid, eventId));
}

/** The key to use: the pending one for the same quantity, else a new one (the API binds a key
 *  to its event and quantity, so another quantity is another purchase). */
export function purchaseKey(uid, eventId, quantity) {
  const pending = pendingPurchase(uid, eventId);
  if (pending && pending.quantity === quantity) return pending;
  const fresh = { key: newKey(), quantity, location: null };
  keep(uid, eventId, fresh);
  return fresh;
}

const isOrder = (body) => body && Array.isArray(body.ticket_ids) && typeof body.status === 'string';

/** What a queued request's body says: {state, position}. Tolerates the fields' likely names. */
export function queueState(body) {
  const request = body?.request ?? body ?? {};
  return {
    state: request.state ?? request.status ?? 'queued',
    position: request.position ?? request.place ?? request.ahead ?? null,
  };
}

/**
 * Buy `quantity` tickets of `eventId`. `onQueued({state, position})` is called while the request
 * waits in the admission queue. Resolves the order; throws ApiError (with `.retryable`).
 */
export async function buy(auth, eventId, quantity, { onQueued = () => {}, maxWaitMs = 120_000 } = {}) {
  const uid = auth.currentUser.uid;
  const pending = purchaseKey(uid, eventId, quantity);
  try {
    let answer;
    if (pending.location) {
      answer = await callApi(auth, pending.location);
    } else {
      answer = await callApi(auth, '/v1/purchases', {
        method: 'POST',
        headers: { 'Idempotency-Key': pending.key },
        body: { event_id: eventId, quantity },
      });
    }
    const deadline = Date.now() + maxWaitMs;
    while (!isOrder(answer.body) && !isOrder(answer.body?.order)) {
      const location = answer.headers.get('Location') || pending.location;
      if (!location) throw new ApiError(502, { detail: 'the server queued the purchase without saying where to ask' });
      if (location !== pending.location) keep(uid, eventId, { ...pending, location });
      pending.location = location;
      const refusal = answer.body?.problem ?? (answer.body?.code && answer.body?.status >= 400 ? answer.body : null);
      if (refusal) throw new ApiError(refusal.status ?? 409, refusal, null);
      onQueued(queueState(answer.body));
      if (Date.now() > deadline) throw new ApiError(504, { detail: 'still queued; the page will keep asking when reloaded' });
      const wait = Number(answer.headers.get('Retry-After')) || 1;
      await sleep(Math.min(Math.max(wait, 0.5), 5) * 1000);
      answer = await callApi(auth, location);
    }
    forget(uid, eventId);
    return isOrder(answer.body) ? answer.body : answer.body.order;
  } catch (err) {
    // A refusal is final for this key (nothing was written); anything else keeps the key so that
    // trying again cannot buy twice.
    if (!(err instanceof ApiError) || !err.retryable) forget(uid, eventId);
    throw err;
  }
}

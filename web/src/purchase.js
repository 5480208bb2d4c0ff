// Buying through the API exactly once: the Idempotency-Key is made before the first attempt and
// kept (sessionStorage) until the purchase has a definitive answer, so a double click, a retry
// after a network error, or a reload while queued all ask for the same order.
//
// Answers: 201 with the order; 202 with `Location: /v1/purchases/{id}` when the request is queued
// (the admission queue): the page listens to its answer document `requests/{id}` and asks that
// location again when it appears (or after Retry-After at the latest), reporting the request's
// state and estimated place until the answer is an order or a refusal. The Location carries the
// request's event and arrival time, so a poll (after a reload too) says where it stands.

import { doc, onSnapshot } from 'firebase/firestore';
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

/** What a queued request's body says: {state, ahead, etaS, queuedS}. The API's RequestOut has
 *  `status` (pending | order | refused) and, while pending, `queue`: the request's place as
 *  estimated from the allocator's progress (state waiting_for_allocator | queued | next). */
export function queueState(body) {
  const q = body?.queue ?? null;
  return {
    state: q?.state ?? body?.status ?? 'pending',
    ahead: q?.ahead ?? null,
    etaS: q?.eta_s ?? null,
    queuedS: q?.queued_s ?? null,
  };
}

/** The sentence a buyer reads while their request waits. The numbers are estimates ("about"). */
export function describeQueue({ state, ahead, etaS, queuedS }, waitedMs) {
  const waited = Math.round(queuedS ?? waitedMs / 1000);
  const keep = 'Keep this page open: your answer is on its way.';
  if (state === 'waiting_for_allocator') {
    return `Queued (${waited} s): the sale's queue is not moving right now; you keep your place. ${keep}`;
  }
  if (state === 'next' || ahead === 0) return `Queued (${waited} s): you are next, your answer is being made.`;
  if (ahead != null) {
    const eta = etaS != null ? `, answered in about ${Math.max(1, Math.round(etaS))} s` : '';
    return `Queued (${waited} s): about ${ahead} request${ahead === 1 ? '' : 's'} ahead of you${eta}. ${keep}`;
  }
  return `Queued (${waited} s). ${keep}`;
}

/** Waits until `requests/{id}` exists (the allocator's answer; a buyer may listen to their own
 *  under firestore.rules) or `ms` pass, whichever is first. */
function answerOrTimeout(db, requestId, ms) {
  return new Promise((resolve) => {
    let stop = () => {};
    const timer = setTimeout(() => { stop(); resolve(false); }, ms);
    stop = onSnapshot(doc(db, 'requests', requestId), (snap) => {
      if (snap.exists()) { clearTimeout(timer); stop(); resolve(true); }
    }, () => {}); // refused or offline: the poll still answers
  });
}

/**
 * Buy `quantity` tickets of `eventId`. `onQueued({state, ahead, etaS, queuedS, waitedMs})` is called while
 * the request waits in the admission queue. Resolves the order; throws ApiError (`.retryable`).
 */
export async function buy({ auth, db }, eventId, quantity, { onQueued = () => {}, maxWaitMs = 120_000 } = {}) {
  const uid = auth.currentUser.uid;
  const pending = purchaseKey(uid, eventId, quantity);
  const started = Date.now();
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
    while (!isOrder(answer.body) && !isOrder(answer.body?.order)) {
      const body = answer.body ?? {};
      if (body.status === 'refused' || body.error) {
        const error = body.error ?? {};
        throw new ApiError(409, { code: error.code, detail: error.message }, null);
      }
      const location = pending.location || answer.headers.get('Location') || (body.id && `/v1/purchases/${body.id}`);
      if (!location) throw new ApiError(502, { detail: 'the server queued the purchase without saying where to ask' });
      if (location !== pending.location) {
        pending.location = location;
        keep(uid, eventId, pending);
      }
      onQueued({ ...queueState(body), waitedMs: Date.now() - started });
      if (Date.now() - started > maxWaitMs) {
        throw new ApiError(504, { detail: 'still queued; reload the page later and it will ask again' });
      }
      const wait = Math.min(Math.max(Number(answer.headers.get('Retry-After')) || 1, 0.5), 5) * 1000;
      if (body.id) await answerOrTimeout(db, body.id, wait);
      else await sleep(wait);
      answer = await callApi(auth, location);
    }
    forget(uid, eventId);
    return isOrder(answer.body) ? answer.body : answer.body.order;
  } catch (err) {
    // A refusal is final for this key (nothing was bound to it); anything else keeps the key so
    // that trying again cannot buy twice.
    if (!(err instanceof ApiError) || !err.retryable) forget(uid, eventId);
    throw err;
  }
}

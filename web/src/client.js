// What both pages share: the Firebase app from the server's config, calls to the HTTP API with
// the signed-in user's ID token, and problem documents turned into sentences a buyer can act on.

import { initializeApp } from 'firebase/app';
import { connectAuthEmulator, getAuth } from 'firebase/auth';
import { connectFirestoreEmulator, initializeFirestore } from 'firebase/firestore';

/** The Firebase app, Auth and Firestore, configured from GET /v1/client-config. */
export async function startFirebase() {
  const response = await fetch('/v1/client-config');
  if (!response.ok) throw new Error(`the server gave no Firebase config (HTTP ${response.status})`);
  const config = await response.json();
  const app = initializeApp(config.firebase);
  const auth = getAuth(app);
  // Long polling works everywhere (proxies, the emulator) and the summary changes at most once a
  // second, so a streaming WebChannel would buy nothing here.
  const db = initializeFirestore(app, { experimentalAutoDetectLongPolling: true });
  if (config.emulators?.auth) {
    connectAuthEmulator(auth, `http://${config.emulators.auth}`, { disableWarnings: true });
  }
  if (config.emulators?.firestore) {
    const [host, port] = config.emulators.firestore.split(':');
    connectFirestoreEmulator(db, host, Number(port));
  }
  return { app, auth, db, config };
}

/** An error answer of the API, with its problem document. */
export class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    super(describeProblem(status, problem, retryAfter));
    this.status = status;
    this.code = problem?.code ?? `http_${status}`;
    this.problem = problem;
    this.retryAfter = retryAfter;
  }

  /** True when sending the same request again (same Idempotency-Key) may succeed. */
  get retryable() {
    return this.status === 0 || this.status === 429 || this.status >= 500;
  }
}

const MESSAGES = {
  sold_out: 'Sold out: every ticket has been taken. Join the waitlist to hear when tickets come back.',
  not_enough_tickets: 'Not enough tickets left for that many. Try a smaller number.',
  per_user_limit_exceeded: 'That would take you over the limit of tickets per person for this event.',
  event_not_on_sale: 'This event is not on sale right now.',
  idempotency_conflict: 'This purchase was already sent with other details; start a new one.',
  contention_timeout: 'Very busy right now; your purchase was not made. Try again in a moment.',
  not_sold_out: 'Tickets are still available: buy instead of joining the waitlist.',
  unauthenticated: 'Please sign in again.',
  order_not_found: 'No such order.',
  event_not_found: 'No such event.',
};

/** A sentence for an error answer: our words for the codes a buyer meets, else the API's own. */
export function describeProblem(status, problem, retryAfter) {
  if (status === 0) return 'Cannot reach the server. Check your connection and try again.';
  if (status === 429) {
    const wait = retryAfter ? ` in ${retryAfter} s` : ' in a moment';
    return `Too many requests: please wait and try again${wait}.`;
  }
  const known = problem?.code && MESSAGES[problem.code];
  if (known) return known;
  if (problem?.detail) return problem.detail.charAt(0).toUpperCase() + problem.detail.slice(1) + '.';
  return status >= 500 ? 'Something went wrong on our side. Try again shortly.' : `Refused (HTTP ${status}).`;
}

/** Calls the API as the signed-in user; resolves {status, body, headers}, throws ApiError. */
export async function callApi(auth, path, { method = 'GET', body, headers = {} } = {}) {
  const user = auth.currentUser;
  const token = user ? await user.getIdToken() : null;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: {
        ...(token ? { Authorization: `Bearer ${token}` } : {}),
        ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}),
        ...headers,
      },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
  } catch (err) {
    throw new ApiError(0, null, null);
  }
  const text = await response.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch { parsed = null; }
  const retryAfter = response.headers.get('Retry-After');
  if (!response.ok) throw new ApiError(response.status, parsed, retryAfter);
  return { status: response.status, body: parsed, headers: response.headers };
}

export const money = (minor, currency) =>
  new Intl.NumberFormat(undefined, { style: 'currency', currency: currency || 'EUR' }).format((minor ?? 0) / 100);

/** Creates an element: el('p', {class: 'x'}, 'text', child). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The sign-in / sign-up form both pages use (Firebase Auth: the emulator locally, the real
// service in production), and the signed-in bar with "Sign out".

import {
  createUserWithEmailAndPassword,
  onAuthStateChanged,
  signInWithEmailAndPassword,
  signOut,
} from 'firebase/auth';
import { el } from './client.js';

const AUTH_MESSAGES = {
  'auth/invalid-credential': 'Wrong email or password.',
  'auth/wrong-password': 'Wrong email or password.',
  'auth/user-not-found': 'No account with that email: create one.',
  'auth/email-already-in-use': 'An account with that email exists: sign in instead.',
  'auth/weak-password': 'Choose a password of at least 6 characters.',
  'auth/invalid-email': 'That email address does not look right.',
  'auth/network-request-failed': 'Cannot reach the sign-in service. Try again.',
  'auth/too-many-requests': 'Too many attempts: wait a moment and try again.',
};

/**
 * Renders the auth panel into `root` and calls `onUser(user | null, claims)` on every change.
 */
export function mountAuthPanel(root, auth, onUser) {
  const status = el('p', { class: 'message', role: 'status', 'aria-live': 'polite', id: 'auth-message' });
  const email = el('input', { id: 'email', type: 'email', name: 'email', autocomplete: 'email', required: true });
  const password = el('input', {
    id: 'password', type: 'password', name: 'password', autocomplete: 'current-password', required: true, minlength: '6',
  });
  const signInButton = el('button', { type: 'submit', id: 'sign-in' }, 'Sign in');
  const signUpButton = el('button', { type: 'button', id: 'sign-up', class: 'secondary' }, 'Create account');

  async function attempt(action) {
    if (!email.value || !password.value) {
      status.textContent = 'Enter your email and a password.';
      (email.value ? password : email).focus();
      return;
    }
    signInButton.disabled = signUpButton.disabled = true;
    status.textContent = action === 'up' ? 'Creating your account…' : 'Signing in…';
    try {
      if (action === 'up') await createUserWithEmailAndPassword(auth, email.value, password.value);
      else await signInWithEmailAndPassword(auth, email.value, password.value);
      status.textContent = '';
    } catch (err) {
      status.textContent = AUTH_MESSAGES[err.code] || `Could not sign in: ${err.message}`;
      password.focus();
    } finally {
      signInButton.disabled = signUpButton.disabled = false;
    }
  }

  const form = el('form', { id: 'auth-form', class: 'auth-form', novalidate: true,
    onsubmit: (e) => { e.preventDefault(); attempt('in'); } },
  el('div', { class: 'field' }, el('label', { for: 'email' }, 'Email'), email),
  el('div', { class: 'field' }, el('label', { for: 'password' }, 'Password'), password),
  el('div', { class: 'actions' }, signInButton, signUpButton),
  status);
  signUpButton.addEventListener('click', () => attempt('up'));

  const who = el('span', { id: 'who' });
  const signOutButton = el('button', { type: 'button', id: 'sign-out', class: 'secondary',
    onclick: () => signOut(auth) }, 'Sign out');
  const bar = el('div', { class: 'signed-in', hidden: true }, who, signOutButton);
  root.replaceChildren(form, bar);

  onAuthStateChanged(auth, async (user) => {
    let claims = {};
    if (user) {
      claims = (await user.getIdTokenResult()).claims;
      who.textContent = `Signed in as ${user.email}${claims.organiser ? ' (organiser)' : ''}`;
    }
    form.hidden = Boolean(user);
    bar.hidden = !user;
    onUser(user, claims);
  });
}

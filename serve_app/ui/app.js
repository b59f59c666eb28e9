// The UI's shell: who is logged in, the navigation, the page router (location hash) and messages.
import { api, ApiError, setCsrfToken } from './api.js';
import { h } from './dom.js';
import * as applications from './pages/applications.js';
import * as collection from './pages/collection.js';
import * as identities from './pages/identities.js';
import * as login from './pages/login.js';
import * as recognize from './pages/recognize.js';
import * as service from './pages/service.js';
import * as status from './pages/status.js';
import * as users from './pages/users.js';
import * as video from './pages/video.js';
import * as jobs from './pages/jobs.js';

export const session = { me: null };

const routes = [
  [/^#\/login$/, login.render, { public: true }],
  [/^#\/apps$/, applications.renderList],
  [/^#\/apps\/(\d+)$/, applications.renderOne],
  [/^#\/services\/(\d+)\/collection$/, collection.render],
  [/^#\/services\/(\d+)\/test$/, recognize.render],
  [/^#\/services\/(\d+)\/identities$/, identities.render],
  [/^#\/services\/(\d+)\/stats$/, service.render],
  [/^#\/users$/, users.render],
  [/^#\/video$/, video.render],
  [/^#\/jobs$/, jobs.render],
  [/^#\/status$/, status.render],
];

const main = document.getElementById('main');
const flashBox = document.getElementById('flash');
let leaving = [];

// A readable message above the page: an error (default) or information.
export function flash(message, kind = 'error') {
  flashBox.className = kind;
  flashBox.textContent = message;
}

async function settle(work) {
  try {
    return { done: true, result: await work() };
  } catch (error) {
    if (error instanceof ApiError && error.status === 401 && session.me) goLogin();  // the session ended
    else flash(error.message);
    return { done: false };
  }
}

// Run something the user asked for; its error is shown, never swallowed.
export async function attempt(work, success) {
  flash('');
  const { done, result } = await settle(work);
  if (done && success) flash(success, 'info');
  return result;
}

// Load what a page shows: its error is shown, and a message shown before (what a change that
// reloads the page just did) stays.
export async function load(work) {
  return (await settle(work)).result;
}

// Work to undo when the page is left (timers, live connections).
export function onLeave(undo) {
  leaving.push(undo);
}

export const isAdmin = () => session.me && ['owner', 'administrator'].includes(session.me.user.global_role);

export async function loadSession() {
  session.me = await api('/api/v1/auth/me');
  setCsrfToken(session.me.csrf_token);
  return session.me;
}

export function setSession(me) {
  session.me = me;
  setCsrfToken(me ? me.csrf_token : null);
}

function goLogin() {
  setSession(null);
  if (location.hash !== '#/login') location.hash = '#/login';
}

async function logout() {
  await attempt(() => api('/api/v1/auth/logout', { method: 'POST' }));
  setSession(null);
  location.hash = '#/login';
  flash('You are logged out.', 'info');
}

function renderNav() {
  const nav = document.getElementById('nav');
  if (!session.me) return nav.replaceChildren();
  const links = [['#/apps', 'Applications']];
  if (isAdmin()) links.push(['#/video', 'Video'], ['#/jobs', 'Bulk jobs'], ['#/users', 'Users'], ['#/status', 'Server status']);
  nav.replaceChildren(
    ...links.map(([href, text]) => h('a', { href, 'aria-current': location.hash.startsWith(href) ? 'page' : null }, text)),
    h('span', { class: 'spacer' }),
    h('span', { class: 'muted', id: 'whoami' }, `${session.me.user.email} (${session.me.user.global_role})`),
    h('button', { type: 'button', class: 'secondary', onclick: logout }, 'Log out'));
}

async function route() {
  for (const undo of leaving.splice(0)) undo();
  if (!location.hash || location.hash === '#/') location.hash = '#/apps';
  const found = routes.find(([pattern]) => pattern.test(location.hash));
  if (!found) {
    main.replaceChildren(h('h1', {}, 'Page not found'), h('a', { href: '#/apps' }, 'Applications'));
    return;
  }
  const [pattern, render, options] = found;
  if (!options?.public && !session.me) {
    try {
      await loadSession();
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return goLogin();
      flash(error.message);
      return;
    }
  }
  renderNav();
  main.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
  const params = location.hash.match(pattern).slice(1).map(Number);
  try {
    const page = await render(...params);
    main.replaceChildren(page);
    main.focus();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return goLogin();
    main.replaceChildren(h('h1', {}, 'This page cannot be shown'), h('p', { class: 'error', role: 'alert' }, error.message));
  }
}

window.addEventListener('hashchange', () => { flash(''); route(); });
route();

// Log in, or on the first start create the owner (with the admin token the server printed).
import { api } from '../api.js';
import { attempt, setSession } from '../app.js';
import { field, formData, h, input } from '../dom.js';

function credentials() {
  return [
    field('E-mail', input('email', { type: 'email', required: true, autocomplete: 'username' })),
    field('Password', input('password', { type: 'password', required: true, minlength: 8, autocomplete: 'current-password' })),
  ];
}

async function submit(event, path) {
  event.preventDefault();
  const me = await attempt(() => api(path, { method: 'POST', body: formData(event.target) }));
  if (me) {
    setSession(me);
    location.hash = '#/apps';
  }
}

export async function render() {
  const { needs_owner: needsOwner } = await api('/api/v1/auth/setup');
  if (needsOwner) {
    return h('div', {},
      h('h1', {}, 'Create the owner'),
      h('p', {}, 'This platform has no users yet. The owner is created with the admin token that the first start ',
        'of the server printed (or FACES_ADMIN_TOKEN).'),
      h('form', { class: 'card', id: 'setup-form', onsubmit: (e) => submit(e, '/api/v1/auth/setup') },
        field('Admin token', input('admin_token', { type: 'password', required: true, autocomplete: 'off' })),
        ...credentials(),
        h('button', { type: 'submit' }, 'Create owner')));
  }
  return h('div', {},
    h('h1', {}, 'Log in'),
    h('form', { class: 'card', id: 'login-form', onsubmit: (e) => submit(e, '/api/v1/auth/login') },
      ...credentials(),
      h('button', { type: 'submit' }, 'Log in')));
}

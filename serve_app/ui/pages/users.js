// Users (owner and administrators): paged list, create, change global role or password, delete.
import { api, query } from '../api.js';
import { attempt, session } from '../app.js';
import { button, field, formData, h, input, select, table } from '../dom.js';
import { pager } from './common.js';

const PER_PAGE = 50;
const ROLES = [['user', 'user'], ['administrator', 'administrator']];

export async function render(page = 0) {
  const box = h('div', {});
  async function load(p) {
    const data = await api(`/api/v1/admin/users?${query({ page: p, size: PER_PAGE })}`);
    const rows = data.users.map((user) => {
      const owner = user.global_role === 'owner';
      const role = select('global_role', ROLES, user.global_role);
      role.setAttribute('aria-label', `Global role of ${user.email}`);
      role.addEventListener('change', async () => {
        if (!await attempt(() => api(`/api/v1/admin/users/${user.id}`, { method: 'PUT', body: { global_role: role.value } }), 'Role changed.')) role.value = user.global_role;
      });
      const mine = user.id === session.me.user.id;
      return h('tr', { 'data-user': user.email },
        h('td', {}, user.email),
        h('td', {}, owner ? 'owner' : role),
        h('td', { class: 'actions' },
          owner && !mine ? null : button('Set password', async () => {
            const password = prompt(`New password for ${user.email} (at least 8 characters)`);
            if (password) await attempt(() => api(`/api/v1/admin/users/${user.id}`, { method: 'PUT', body: { password } }), 'Password changed.');
          }, { class: 'secondary', 'aria-label': `Set password of ${user.email}` }),
          owner ? null : button('Delete', async () => {
            if (confirm(`Delete user ${user.email}?`) && await attempt(() => api(`/api/v1/admin/users/${user.id}`, { method: 'DELETE' }), 'User deleted.')) load(p);
          }, { class: 'danger', 'aria-label': `Delete ${user.email}` })));
    });
    box.replaceChildren(table(['E-mail', 'Global role', ''], rows), pager('Users', p, PER_PAGE, data.total, load));
  }
  await load(page);
  return h('div', {}, h('h1', {}, 'Users'), box,
    h('h2', {}, 'Add a user'),
    h('form', {
      class: 'card', id: 'create-user',
      onsubmit: async (event) => {
        event.preventDefault();
        if (await attempt(() => api('/api/v1/admin/users', { method: 'POST', body: formData(event.target) }), 'User created.')) {
          event.target.reset();
          load(0);
        }
      },
    }, field('E-mail', input('email', { type: 'email', required: true, autocomplete: 'off' })),
    field('Password', input('password', { type: 'password', required: true, minlength: 8, autocomplete: 'new-password' })),
    field('Global role', select('global_role', ROLES, 'user')),
    h('button', { type: 'submit' }, 'Add user')));
}

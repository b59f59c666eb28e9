// Applications and their services: create, rename, delete, API keys (copy, regenerate), members.
import { api } from '../api.js';
import { attempt, isAdmin, session } from '../app.js';
import { button, field, formData, h, input, select, table } from '../dom.js';

const RANK = { user: 1, administrator: 2, owner: 3 };
const roleIn = (appId) => (isAdmin() ? 'owner' : session.me.applications[appId]);
const may = (appId, role) => RANK[roleIn(appId)] >= RANK[role];
const rerender = () => window.dispatchEvent(new HashChangeEvent('hashchange'));

export async function renderList() {
  const apps = await api('/api/v1/admin/applications');
  const create = h('form', {
    class: 'card', id: 'create-application',
    onsubmit: async (event) => {
      event.preventDefault();
      const app = await attempt(() => api('/api/v1/admin/applications', { method: 'POST', body: formData(event.target) }));
      if (app) {
        if (!isAdmin()) session.me.applications[app.id] = 'owner';
        location.hash = `#/apps/${app.id}`;
      }
    },
  }, field('New application name', input('name', { required: true, maxlength: 255 })), h('button', { type: 'submit' }, 'Create application'));
  return h('div', {},
    h('h1', {}, 'Applications'),
    apps.length
      ? table(['Name', 'Your role', 'Created'], apps.map((app) => h('tr', {},
        h('td', {}, h('a', { href: `#/apps/${app.id}` }, app.name)),
        h('td', {}, roleIn(app.id)),
        h('td', {}, new Date(app.created_at).toLocaleString()))))
      : h('p', { class: 'muted' }, 'No application yet.'),
    h('h2', {}, 'Create an application'),
    create);
}

function keyBox(service) {
  if (!service.api_key) return null;
  return h('section', { id: 'new-key', 'aria-live': 'polite' },
    h('p', {}, `API key of service "${service.name}" (shown only now): `, h('span', { class: 'key', id: 'api-key' }, service.api_key), ' ',
      button('Copy', async () => attempt(() => navigator.clipboard.writeText(service.api_key), 'Copied to the clipboard.'), { class: 'secondary' })));
}

function serviceRow(appId, service, showKey) {
  const admin = may(appId, 'administrator');
  const rename = async () => {
    const name = prompt(`New name of service "${service.name}"`, service.name);
    if (name && await attempt(() => api(`/api/v1/admin/services/${service.id}`, { method: 'PUT', body: { name } }), 'Service renamed.')) rerender();
  };
  const remove = async () => {
    if (confirm(`Delete service "${service.name}" and all its faces?`)
        && await attempt(() => api(`/api/v1/admin/services/${service.id}`, { method: 'DELETE' }), 'Service deleted.')) rerender();
  };
  const regenerate = async () => {
    if (!confirm(`A new key for "${service.name}"? The old key stops working at once.`)) return;
    const updated = await attempt(() => api(`/api/v1/admin/services/${service.id}/key`, { method: 'POST' }));
    if (updated) showKey(updated);
  };
  return h('tr', { 'data-service': service.name },
    h('td', {}, service.name), h('td', {}, service.type), h('td', {}, service.model),
    h('td', {}, service.similarity_threshold ?? 'default'),
    h('td', { class: 'actions' },
      service.type === 'recognition' ? [
        h('a', { href: `#/services/${service.id}/collection` }, 'Collection'),
        h('a', { href: `#/services/${service.id}/test` }, 'Test'),
        h('a', { href: `#/services/${service.id}/identities` }, 'Unknown faces'),
      ] : null,
      h('a', { href: `#/services/${service.id}/stats` }, 'Statistics'),
      admin ? [
        button('Rename', rename, { class: 'secondary', 'aria-label': `Rename ${service.name}` }),
        button('New key', regenerate, { class: 'secondary', 'aria-label': `New API key for ${service.name}` }),
        button('Delete', remove, { class: 'danger', 'aria-label': `Delete ${service.name}` }),
      ] : null));
}

function membersSection(appId, members) {
  const owner = may(appId, 'owner');
  const rows = members.map(({ user, role }) => h('tr', {},
    h('td', {}, user.email), h('td', {}, role),
    h('td', {}, owner ? button('Remove', async () => {
      if (await attempt(() => api(`/api/v1/admin/applications/${appId}/members/${user.id}`, { method: 'DELETE' }), 'Member removed.')) rerender();
    }, { class: 'danger', 'aria-label': `Remove ${user.email}` }) : null)));
  return h('div', {},
    h('h2', {}, 'Members'),
    members.length ? table(['User', 'Role', ''], rows) : h('p', { class: 'muted' }, 'No member besides the global owner and administrators.'),
    owner ? h('form', {
      class: 'card', id: 'add-member',
      onsubmit: async (event) => {
        event.preventDefault();
        if (await attempt(() => api(`/api/v1/admin/applications/${appId}/members`, { method: 'PUT', body: formData(event.target) }), 'Role given.')) rerender();
      },
    }, field('User e-mail', input('email', { type: 'email', required: true })),
    field('Role', select('role', [['user', 'user'], ['administrator', 'administrator'], ['owner', 'owner']], 'user')),
    h('button', { type: 'submit' }, 'Give role')) : null);
}

export async function renderOne(appId) {
  const [apps, services, members] = await Promise.all([
    api('/api/v1/admin/applications'), api(`/api/v1/admin/applications/${appId}/services`),
    api(`/api/v1/admin/applications/${appId}/members`)]);
  const app = apps.find((a) => a.id === appId);
  const keyPlace = h('div', {});
  const showKey = (service) => keyPlace.replaceChildren(keyBox(service) || '');
  const page = h('div', {}, h('p', {}, h('a', { href: '#/apps' }, '← Applications')), h('h1', {}, `Application: ${app.name}`), keyPlace);
  if (may(appId, 'owner')) {
    page.append(h('form', {
      class: 'card', id: 'rename-application',
      onsubmit: async (event) => {
        event.preventDefault();
        if (await attempt(() => api(`/api/v1/admin/applications/${appId}`, { method: 'PUT', body: formData(event.target) }), 'Application renamed.')) rerender();
      },
    }, field('Application name', input('name', { required: true, value: app.name, maxlength: 255 })),
    h('button', { type: 'submit' }, 'Rename'),
    button('Delete application', async () => {
      if (confirm(`Delete application "${app.name}" with all its services and faces?`)
          && await attempt(() => api(`/api/v1/admin/applications/${appId}`, { method: 'DELETE' }), 'Application deleted.')) location.hash = '#/apps';
    }, { class: 'danger' })));
  }
  page.append(h('h2', {}, 'Services'),
    services.length ? table(['Name', 'Type', 'Model', 'Threshold', ''], services.map((s) => serviceRow(appId, s, showKey)))
      : h('p', { class: 'muted' }, 'No service yet.'));
  if (may(appId, 'administrator')) {
    page.append(h('form', {
      class: 'card', id: 'create-service',
      onsubmit: async (event) => {
        event.preventDefault();
        const body = formData(event.target);
        const created = await attempt(() => api(`/api/v1/admin/applications/${appId}/services`, { method: 'POST', body }), 'Service created.');
        if (created) {
          const fresh = await renderOne(appId);
          page.replaceWith(fresh);
          fresh.querySelector('#new-key-place')?.replaceChildren(keyBox(created));
        }
      },
    }, field('New service name', input('name', { required: true, maxlength: 255 })),
    field('Type', select('type', [['recognition', 'recognition'], ['detection', 'detection'], ['verification', 'verification'], ['video', 'video']], 'recognition')),
    field('Embedding model', select('model', [['sface', 'sface'], ['dlib-resnet', 'dlib-resnet'], ['fusion', 'fusion (sface + dlib-resnet)']], 'sface')),
    h('button', { type: 'submit' }, 'Create service')));
  }
  keyPlace.id = 'new-key-place';
  page.append(membersSection(appId, members));
  return page;
}

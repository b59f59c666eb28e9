// Pieces several pages share: the service header of a page, a pager.
import { api } from '../api.js';
import { button, h } from '../dom.js';

export async function serviceHeader(serviceId, title) {
  const service = await api(`/api/v1/admin/services/${serviceId}`);
  return {
    service,
    header: h('div', {},
      h('p', {}, h('a', { href: `#/apps/${service.application_id}` }, '← Application')),
      h('h1', {}, `${title}: ${service.name}`)),
  };
}

// "Previous / page i of n / Next" for a list of total items, size per page.
export function pager(label, page, size, total, go) {
  const pages = Math.max(1, Math.ceil(total / size));
  return h('div', { class: 'pager', role: 'navigation', 'aria-label': label },
    button('Previous', () => go(page - 1), { class: 'secondary', disabled: page <= 0, 'aria-label': `${label}: previous page` }),
    h('span', {}, `page ${page + 1} of ${pages} (${total})`),
    button('Next', () => go(page + 1), { class: 'secondary', disabled: page + 1 >= pages, 'aria-label': `${label}: next page` }));
}

// Every recognition service the caller sees, with its application's name.
export async function recognitionServices() {
  const apps = await api('/api/v1/admin/applications');
  const lists = await Promise.all(apps.map((app) => api(`/api/v1/admin/applications/${app.id}/services`)
    .then((services) => services.map((s) => ({ ...s, application: app.name })))));
  return lists.flat().filter((s) => s.type === 'recognition');
}

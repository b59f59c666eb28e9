// A recognition service's identities of unknown faces: each with its best shot, sightings and when
// it was seen (paged, the most recently seen first); an identity's sightings as thumbnails of their
// crops; promote one to a subject (its best shots enrolled), or ignore it.
import { api, imageUrl, query } from '../api.js';
import { attempt, onLeave } from '../app.js';
import { button, field, h, input } from '../dom.js';
import { pager, serviceHeader } from './common.js';

const IDENTITIES_PER_PAGE = 24;
const SIGHTINGS_PER_PAGE = 24;
const PROMOTED_FACES = 5;

const when = (iso) => new Date(iso).toLocaleString();

export async function render(serviceId) {
  const { header } = await serviceHeader(serviceId, 'Unknown faces');
  const state = { page: 0, identity: null };
  const blobs = [];
  onLeave(() => blobs.splice(0).forEach((url) => URL.revokeObjectURL(url)));
  const listBox = h('section', { 'aria-label': 'identities', id: 'identities' });
  const detailBox = h('section', { 'aria-label': 'sightings', id: 'sightings' });

  function crop(sightingId, alt) {
    const img = h('img', { alt, width: 112, height: 112 });
    imageUrl(`/api/v1/recognition/sightings/${encodeURIComponent(sightingId)}/img`, serviceId)
      .then((url) => { blobs.push(url); img.src = url; })
      .catch((error) => { img.alt = `crop unavailable: ${error.message}`; });
    return img;
  }

  async function loadIdentities() {
    const data = await attempt(() => api(`/api/v1/recognition/identities?${query({ page: state.page, size: IDENTITIES_PER_PAGE })}`, { service: serviceId }));
    if (!data) return;
    const items = data.identities.map((identity) => h('figure', { 'data-identity': identity.id },
      crop(identity.best_sighting, `best shot of identity ${identity.id}`),
      h('figcaption', {}, h('strong', {}, `#${identity.id}`), ` · ${identity.sightings} sighting${identity.sightings === 1 ? '' : 's'}`,
        h('br'), h('span', { class: 'muted' }, `last seen ${when(identity.last_seen)}`)),
      button('Sightings', () => { state.identity = identity; loadSightings(); }, { class: 'secondary', 'aria-label': `Sightings of identity ${identity.id}` })));
    listBox.replaceChildren(h('h2', {}, 'Identities'),
      items.length ? h('div', { class: 'thumbs' }, items) : h('p', { class: 'muted' }, 'No unknown face remembered yet (recognize with remember_unknowns=true).'),
      pager('Identities', state.page, IDENTITIES_PER_PAGE, data.total_elements, (p) => { state.page = p; loadIdentities(); }));
  }

  async function loadSightings() {
    const identity = state.identity;
    if (identity === null) {
      detailBox.replaceChildren(h('p', { class: 'muted' }, 'Choose an identity to see its sightings.'));
      return;
    }
    const sightings = await attempt(() => api(`/api/v1/recognition/identities/${identity.id}/sightings?${query({ size: SIGHTINGS_PER_PAGE })}`, { service: serviceId }));
    if (!sightings) return;
    const promote = h('form', {
      id: 'promote-identity',
      onsubmit: async (event) => {
        event.preventDefault();
        const subject = event.target.subject.value.trim();
        const done = await attempt(() => api(`/api/v1/recognition/identities/${identity.id}/promote`, { method: 'POST', body: { subject, faces: PROMOTED_FACES }, service: serviceId }),
          `Identity ${identity.id} is now the subject "${subject}".`);
        if (done) { state.identity = null; loadIdentities(); loadSightings(); }
      },
    }, field('Promote to subject', input('subject', { required: true, maxlength: 255 })), h('button', { type: 'submit' }, 'Promote'),
    button('Ignore', async () => {
      if (await attempt(() => api(`/api/v1/recognition/identities/${identity.id}/ignore`, { method: 'POST', service: serviceId }), `Identity ${identity.id} is ignored.`)) {
        state.identity = null; loadIdentities(); loadSightings();
      }
    }, { class: 'secondary' }));
    const thumbs = sightings.map((sighting) => h('figure', { 'data-sighting': sighting.id },
      crop(sighting.id, `sighting ${sighting.id}`),
      h('figcaption', { class: 'muted' }, when(sighting.seen_at), h('br'), sighting.source)));
    const shown = sightings.length < identity.sightings ? ` (the latest ${sightings.length})` : '';
    detailBox.replaceChildren(h('h2', { id: 'identity-title' }, `Identity #${identity.id}: ${identity.sightings} sightings${shown}`),
      h('p', { class: 'muted' }, `first seen ${when(identity.first_seen)}, last seen ${when(identity.last_seen)}; sources: ${identity.sources.join(', ')}`),
      promote, h('div', { class: 'thumbs' }, thumbs));
  }

  await Promise.all([loadIdentities(), loadSightings()]);
  return h('div', {}, header, h('div', { class: 'split' }, listBox, detailBox));
}

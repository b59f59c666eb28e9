// Server status: readiness, Ray nodes (CPUs, GPUs, memory), Serve deployments and replicas, versions.
import { api } from '../api.js';
import { h, table } from '../dom.js';

export async function render() {
  const [status, ready] = await Promise.all([
    api('/api/v1/admin/status'),
    fetch('/readyz').then((r) => r.json()).catch((error) => ({ ready: false, checks: { readyz: error.message } }))]);
  const deployments = Object.entries(status.applications).flatMap(([app, a]) => Object.entries(a.deployments).map(([name, d]) => h('tr', {},
    h('td', {}, app), h('td', {}, name), h('td', {}, d.status),
    h('td', {}, Object.entries(d.replicas).map(([state, n]) => `${n} ${state}`).join(', ')))));
  return h('div', {}, h('h1', {}, 'Server status'),
    h('p', { id: 'readiness', class: ready.ready ? 'ok' : 'error' }, ready.ready ? 'Ready' : `Not ready: ${JSON.stringify(ready.checks)}`),
    h('h2', {}, 'Nodes'),
    table(['Node', 'Address', 'Alive', 'CPUs', 'GPUs', 'Memory (GB)'], status.nodes.map((n) => h('tr', {},
      h('td', {}, n.node_id.slice(0, 12)), h('td', {}, n.address), h('td', {}, n.alive ? 'yes' : 'no'),
      h('td', {}, String(n.cpus)), h('td', {}, String(n.gpus)), h('td', {}, (n.memory_bytes / 1e9).toFixed(1))))),
    h('h2', {}, 'Deployments'),
    table(['Application', 'Deployment', 'Status', 'Replicas'], deployments),
    h('h2', {}, 'Versions'),
    table(['Part', 'Version'], Object.entries({ ...status.versions, ...status.versions.models })
      .filter(([, v]) => typeof v === 'string').map(([k, v]) => h('tr', {}, h('td', {}, k), h('td', {}, v)))));
}

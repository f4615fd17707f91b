// The status page: renders GET /xapi-emu/status (with /clock and, when the emulator has it,
// /faults) and fetches them again when the event stream (/xapi-emu/events) reports a change.
// Plain DOM, no framework; every value goes in as text, never as markup.
'use strict';

(() => {
  const $ = (sel) => document.querySelector(sel);

  /** el('td', {class: 'x'}, 'text', child ...) */
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k.startsWith('data-')) e.setAttribute(k, v);
      else e.setAttribute(k, v);
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  const short = (uuid) => (uuid ? String(uuid).slice(0, 8) : '');
  const bytes = (n) => {
    n = Number(n) || 0;
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i++;
    }
    return `${i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
  };
  const compact = (v) => (v === undefined ? '' : typeof v === 'string' ? v : JSON.stringify(v));

  function fillBody(table, rows, columns) {
    const body = $(`${table} tbody`);
    body.replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { class: 'empty', colspan: columns }, 'none'))]));
  }

  // ---- sections ----

  function renderPool(s) {
    $('#pool-name').textContent = s.pool.name_label;
    const master = s.hosts.find((h) => h.master);
    $('#pool-master').textContent = master ? master.name_label : s.pool.master;
    $('#pool-profile').textContent = s.pool.guest_profile;
    $('#generation').textContent = String(s.generation);
  }

  function renderHosts(s) {
    fillBody('#hosts', s.hosts.map((h) => el('tr', { 'data-host': h.uuid },
      el('td', {}, h.name_label, h.master ? el('span', { class: 'tag' }, 'master') : null),
      el('td', { class: 'uuid', title: h.uuid }, short(h.uuid)),
      el('td', { class: 'mono' }, h.address),
      el('td', { class: `live-${h.live}` }, h.live ? (h.enabled ? 'live' : 'live, disabled') : 'not live'),
      el('td', {}, h.cpus),
      el('td', {}, `${bytes(h.memory_free)} / ${bytes(h.memory_total)}`),
      el('td', {}, h.resident_vms),
    )), 7);
  }

  function ipsOf(gm) {
    if (!gm) return '';
    return Object.entries(gm.networks)
      .filter(([k]) => /^\d+\/(ip|ipv4\/\d+|ipv6\/\d+)$/.test(k))
      .filter(([k, v], _i, all) => !(k.endsWith('/ip') && all.some(([k2, v2]) => k2 !== k && v2 === v)))
      .map(([k, v]) => `${k.split('/')[0]}: ${v}`)
      .join(', ');
  }

  function renderVms(s) {
    const hostName = new Map(s.hosts.map((h) => [h.uuid, h.name_label]));
    const c = s.counts;
    $('#vm-counts').textContent = `${c.vms} VMs, ${c.templates} templates, ${c.snapshots} snapshots`;
    fillBody('#vms', s.vms.map((v) => {
      const gm = v.guest_metrics;
      const agent = !gm ? 'none' : `${gm.pv_drivers_detected ? 'PV drivers' : 'no PV drivers'}${gm.os_name ? `, ${gm.os_name}` : ''}${gm.live ? '' : ' (stale)'}`;
      return el('tr', { 'data-vm': v.uuid },
        el('td', { class: 'name' }, v.name_label),
        el('td', { class: 'uuid', title: v.uuid }, short(v.uuid)),
        el('td', { class: `power power-${v.power_state}` }, v.power_state),
        el('td', {}, hostName.get(v.resident_on) || ''),
        el('td', {}, v.power_state === 'Halted' ? '' : v.domid),
        el('td', { class: 'profile' }, v.guest_profile),
        el('td', {}, agent),
        el('td', { class: 'ips mono' }, ipsOf(gm)),
        el('td', {}, v.current_operations.join(', ')),
      );
    }), 9);
  }

  function vdiItem(d, kids) {
    const tags = [
      el('span', { class: 'tag' }, bytes(d.virtual_size)),
      d.is_a_snapshot ? el('span', { class: 'tag snapshot' }, `snapshot of ${short(d.snapshot_of)}`) : null,
      d.managed ? null : el('span', { class: 'tag' }, 'base copy'),
      ...d.attached_to.map((vm) => el('span', { class: 'tag attached' }, `attached: ${vm}`)),
    ];
    const children = kids.get(d.uuid) || [];
    return el('li', { 'data-vdi': d.uuid },
      el('span', { class: 'name' }, d.name_label || '(no name)'), ' ', el('span', { class: 'uuid', title: d.uuid }, short(d.uuid)), tags,
      children.length ? el('ul', { class: 'chain' }, children.map((c) => vdiItem(c, kids))) : null);
  }

  function renderSrs(s) {
    $('#srs').replaceChildren(...s.srs.map((sr) => {
      const byUuid = new Set(sr.vdis.map((d) => d.uuid));
      const kids = new Map();
      const roots = [];
      for (const d of sr.vdis) {
        if (d.parent && byUuid.has(d.parent) && d.parent !== d.uuid) {
          if (!kids.has(d.parent)) kids.set(d.parent, []);
          kids.get(d.parent).push(d);
        } else roots.push(d);
      }
      return el('div', { class: 'sr', 'data-sr': sr.uuid },
        el('h3', {}, sr.name_label, ' ', el('small', {},
          `${sr.type}${sr.shared ? ', shared' : ''}, ${bytes(sr.physical_utilisation)} of ${bytes(sr.physical_size)} used, ${sr.vdis.length} VDIs, attached on ${sr.attached_hosts} host(s)`)),
        roots.length ? el('ul', { class: 'chain' }, roots.map((d) => vdiItem(d, kids))) : el('p', { class: 'none' }, 'no VDIs'));
    }));
  }

  function renderDatapath(s) {
    const parts = [];
    for (const h of s.datapath) {
      const rows = [];
      for (const t of h.tapdisks) {
        rows.push(el('tr', { 'data-tapdisk': t.minor },
          el('td', {}, 'tapdisk'), el('td', {}, `minor ${t.minor}, pid ${t.pid}`),
          el('td', { class: 'mono' }, compact(t.args)), el('td', { class: 'counters' }, `vdi ${short(t.vdi)}${t.read_only ? ', read-only' : ''}, state ${t.state}`)));
      }
      for (const q of h.qemu_dm) {
        for (const d of q.disks || []) {
          rows.push(el('tr', { 'data-qemu': `${q.domid}/${d.dev}` },
            el('td', {}, 'qemu-dm'), el('td', {}, `domid ${q.domid} ${d.dev}${d.unplugged ? ' (unplugged)' : ''}`),
            el('td', { class: 'mono' }, compact(d.file || '')),
            el('td', { class: 'counters' }, `${d.reads} reads, ${d.writes} writes, ${d.flushes} flushes, ${bytes(d.bytes_read)} read, ${bytes(d.bytes_written)} written`)));
        }
      }
      for (const r of h.rings) {
        const ops = r.ops || {};
        const rsp = r.responses || {};
        rows.push(el('tr', { 'data-ring': `${r.domid}/${r.dev}` },
          el('td', {}, 'blkif'), el('td', {}, `domid ${r.domid} ${r.dev} (${r.slots} slots)`),
          el('td', { class: 'counters' }, `req_prod ${r.req_prod}, rsp_prod ${r.rsp_prod}, in flight ${r.in_flight}`),
          el('td', { class: 'counters' },
            `${r.requests} requests (${ops.read || 0} read, ${ops.write || 0} write, ${ops.flush_diskcache || 0} flush, ${ops.discard || 0} discard), ` +
            `${rsp.okay || 0} OKAY, ${rsp.error || 0} ERROR, ${rsp.eopnotsupp || 0} EOPNOTSUPP, ${bytes(r.bytes_read)} read, ${bytes(r.bytes_written)} written`)));
      }
      parts.push(el('h3', {}, h.name_label, ' ', el('small', {}, `${h.tapdisks.length} tapdisks, ${h.qemu_dm.length} qemu-dm, ${h.rings.length} blkif rings`)));
      parts.push(rows.length
        ? el('table', { class: 'datapath' }, el('thead', {}, el('tr', {}, el('th', {}, 'kind'), el('th', {}, 'device'), el('th', {}, 'backing'), el('th', {}, 'counters'))), el('tbody', {}, rows))
        : el('p', { class: 'none' }, 'idle'));
    }
    $('#datapath').replaceChildren(...parts);
  }

  function renderTasks(s) {
    fillBody('#tasks', s.tasks.map((t) => el('tr', { 'data-task': t.uuid },
      el('td', {}, t.name_label), el('td', { class: `status-${t.status}` }, t.status),
      el('td', {}, `${Math.round(t.progress * 100)}%`), el('td', { class: 'mono' }, t.created),
      el('td', { class: 'mono' }, t.error_info.join(' ')))), 5);
  }

  function renderEvents(s) {
    fillBody('#events', s.events.map((e) => el('tr', {},
      el('td', {}, e.id), el('td', {}, e.class), el('td', {}, e.operation), el('td', {}, e.name || e.ref))), 4);
  }

  function renderClock(c) {
    $('#clock').textContent = c ? `${c.now}, scale ${c.scale}${c.frozen ? ', frozen' : ''}${c.sleeping ? `, ${c.sleeping} waiting` : ''}` : '';
  }

  /** The fault rules, whatever the list's exact shape: an array, or an object holding one. */
  function rulesOf(body) {
    if (Array.isArray(body)) return body;
    if (body && typeof body === 'object') for (const v of Object.values(body)) if (Array.isArray(v)) return v;
    return [];
  }

  function renderFaults(body) {
    const rules = rulesOf(body);
    if (rules.length === 0) return $('#faults').replaceChildren(el('p', { class: 'none' }, 'none'));
    const known = ['id', 'match', 'fire', 'effect', 'hits'];
    $('#faults').replaceChildren(el('table', {},
      el('thead', {}, el('tr', {}, ...known.map((k) => el('th', {}, k)), el('th', {}, 'other'))),
      el('tbody', {}, rules.map((r) => {
        const rest = Object.fromEntries(Object.entries(r).filter(([k]) => !known.includes(k)));
        return el('tr', { 'data-fault': compact(r.id) }, ...known.map((k) => el('td', { class: 'mono' }, compact(r[k]))),
          el('td', { class: 'mono' }, Object.keys(rest).length ? compact(rest) : ''));
      }))));
  }

  // ---- fetching ----

  // a page opened with ?session_id= (rather than Basic credentials) passes it on to its requests
  const session = new URLSearchParams(location.search).get('session_id');
  const withSession = (path) => (session ? `${path}${path.includes('?') ? '&' : '?'}session_id=${encodeURIComponent(session)}` : path);

  async function getJson(path) {
    const r = await fetch(withSession(path), { credentials: 'same-origin', headers: { accept: 'application/json' }, cache: 'no-store' });
    const body = await r.json().catch(() => undefined);
    if (!r.ok) {
      const e = new Error((body && body.error && `${body.error.code}: ${body.error.message}`) || `HTTP ${r.status}`);
      e.status = r.status;
      e.code = body && body.error && body.error.code;
      throw e;
    }
    return body;
  }

  async function faults(summary) {
    if (!summary.routes.includes('/faults')) return [];
    try {
      return await getJson('faults');
    } catch (e) {
      if (e.status === 404 || e.code === 'NOT_IMPLEMENTED') return [];
      throw e;
    }
  }

  let running = false;
  let again = false;
  async function refresh() {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      do {
        again = false;
        const [summary, clock] = await Promise.all([getJson('status'), getJson('clock')]);
        const rules = await faults(summary);
        renderPool(summary);
        renderHosts(summary);
        renderVms(summary);
        renderSrs(summary);
        renderDatapath(summary);
        renderTasks(summary);
        renderEvents(summary);
        renderClock(clock);
        renderFaults(rules);
        document.body.dataset.generation = String(summary.generation);
        $('#error').hidden = true;
      } while (again);
    } catch (e) {
      $('#error').textContent = `Could not read the pool: ${e.message}`;
      $('#error').hidden = false;
    } finally {
      running = false;
    }
  }

  function setStream(state) {
    const s = $('#stream');
    s.textContent = state === 'live' ? 'live' : state === 'down' ? 'reconnecting' : 'connecting';
    s.className = `stream-${state}`;
  }

  function follow() {
    const es = new EventSource(withSession('events'));
    es.addEventListener('hello', () => {
      setStream('live');
      refresh();
    });
    es.addEventListener('change', () => refresh());
    // counters of the datapath and the clock move without database writes
    es.addEventListener('heartbeat', () => refresh());
    es.addEventListener('error', () => setStream('down'));
  }

  refresh();
  follow();
})();

// The sentinel dashboard: /v1/state for the first paint, then live from /v1/stream.
//
// No framework and no build step. Every element is built with textContent (never
// innerHTML with data), so a backend name or reason that looks like markup stays text;
// the Content-Security-Policy allows no inline script or style besides. The list is
// virtualised: only the rows in view exist, and an update patches the rows it touches.
'use strict';

(() => {
  const HOUR = 3600e3;
  const SPARK_POINTS = 60;
  const EVENTS_SHOWN = 50;
  const STALE_MS = 40e3; // the stream sends a summary every 2 s and a heartbeat every 15 s
  const OVERSCAN = 8;
  const OPEN_ALL_UP_TO = 1000; // more backends than this: services start collapsed

  const $ = (id) => document.getElementById(id);
  const SVGNS = 'http://www.w3.org/2000/svg';

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    return node;
  }

  // -- the model -----------------------------------------------------------------------

  const services = new Map(); // name -> {name, panic, suspect, up, total, names, open}
  const backends = new Map(); // key -> {service, name, entry, reason, history, lat, probeTime}
  const recent = []; // the last events, newest last
  let summary = {};
  let token = null; // the API token: in this tab's memory only
  let lastSeq = null;
  let firstLoad = true;

  const key = (service, name) => service + '\u0000' + name;

  function record(service, name) {
    const k = key(service, name);
    let rec = backends.get(k);
    if (!rec) {
      rec = {service, name, entry: {name, state: 'unknown'}, reason: '', history: [], lat: [],
             probeTime: null};
      backends.set(k, rec);
    }
    return rec;
  }

  function addLatency(rec, ms) {
    if (typeof ms !== 'number') return;
    rec.lat.push(ms);
    if (rec.lat.length > SPARK_POINTS) rec.lat.shift();
  }

  function applyEntry(service, entry) {
    const rec = record(service, entry.name);
    const probe = entry.last_probe;
    if (probe && probe.time !== rec.probeTime) {
      rec.probeTime = probe.time;
      addLatency(rec, probe.latency_ms);
    }
    rec.entry = entry;
    view.touch(key(service, entry.name));
  }

  function applyService(msg) {
    if (msg.removed) {
      const svc = services.get(msg.service);
      if (svc) for (const n of svc.names) backends.delete(key(msg.service, n));
      services.delete(msg.service);
      view.restructure();
      return;
    }
    let svc = services.get(msg.service);
    if (!svc) {
      svc = {name: msg.service, panic: false, suspect: false, up: 0, total: 0, names: [],
             open: null};
      services.set(msg.service, svc);
      view.restructure();
    }
    svc.panic = msg.panic;
    svc.up = msg.up;
    svc.total = msg.total;
    if (msg.full) {
      const names = msg.backends.map((b) => b.name);
      const keep = new Set(names);
      for (const n of svc.names) if (!keep.has(n)) backends.delete(key(svc.name, n));
      if (names.join('\u0000') !== svc.names.join('\u0000')) view.restructure();
      svc.names = names;
    }
    for (const entry of msg.backends) applyEntry(svc.name, entry);
    view.touchService(svc.name);
  }

  function applyEvent(ev) {
    lastSeq = lastSeq === null ? ev.seq : Math.max(lastSeq, ev.seq);
    recent.push(ev);
    if (recent.length > EVENTS_SHOWN) recent.shift();
    view.eventsChanged();
    const svc = services.get(ev.service);
    if (ev.backend === '') { // a service-level event: panic or suspect
      if (svc && (ev.to === 'panic' || ev.from === 'panic')) svc.panic = ev.to === 'panic';
      if (svc && (ev.to === 'suspect' || ev.from === 'suspect')) svc.suspect = ev.to === 'suspect';
      view.touchService(ev.service);
      return;
    }
    if (!svc || !backends.has(key(ev.service, ev.backend))) return; // a state message follows
    const rec = record(ev.service, ev.backend);
    const t = Date.parse(ev.time);
    rec.history.push({t, from: ev.from, to: ev.to, reason: ev.reason});
    while (rec.history.length && rec.history[0].t < Date.now() - HOUR) rec.history.shift();
    rec.reason = ev.reason;
    if (ev.probe) addLatency(rec, ev.probe.latency_ms);
    // the event itself is the news: the row shows it now, the state message follows
    rec.entry = Object.assign({}, rec.entry, {state: ev.to, weight: ev.weight},
                              ev.from !== ev.to ? {since: ev.time} : {});
    svc.up = svc.names.reduce((n, b) => n + ((backends.get(key(svc.name, b)) || {}).entry
                                              ?.state === 'up' ? 1 : 0), 0);
    view.touch(key(ev.service, ev.backend));
    view.touchService(ev.service);
  }

  function applyState(doc) {
    for (const [name, svc] of Object.entries(doc.services || {})) {
      applyService(Object.assign({service: name, full: true}, svc));
    }
    const rest = Object.assign({}, doc);
    delete rest.services;
    applySummary(rest);
  }

  function applySummary(doc) {
    summary = doc;
    view.headerChanged();
  }

  // -- formatting ----------------------------------------------------------------------

  function ago(iso) {
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return '';
    let s = Math.max(0, Math.round((Date.now() - t) / 1000));
    if (s < 60) return s + 's ago';
    const m = Math.floor(s / 60);
    if (m < 60) return m + 'm ' + (s % 60) + 's ago';
    const h = Math.floor(m / 60);
    if (h < 48) return h + 'h ' + (m % 60) + 'm ago';
    s = Math.floor(h / 24);
    return s + 'd ago';
  }

  const ms = (v) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)) + ' ms';

  function stateBadge(state, extra) {
    const badge = el('span', 'state s-' + (['up', 'down', 'drain', 'maint'].includes(state)
      ? state : 'unknown'), state);
    if (extra) badge.title = extra;
    return badge;
  }

  function sparkline(values) {
    const w = 80, h = 20;
    const box = svg('svg', {width: w, height: h, viewBox: `0 0 ${w} ${h}`, class: 'spark',
                            'aria-hidden': 'true'});
    if (values.length < 2) return box;
    const max = Math.max(...values), min = Math.min(...values);
    const span = max - min || 1;
    const step = w / (SPARK_POINTS - 1);
    const x0 = w - (values.length - 1) * step;
    const points = values.map((v, i) =>
      `${(x0 + i * step).toFixed(1)},${(h - 2 - ((v - min) / span) * (h - 4)).toFixed(1)}`);
    box.append(svg('polyline', {points: points.join(' '), fill: 'none'}));
    return box;
  }

  function timeline(rec) {
    const w = 120, h = 14, now = Date.now(), start = now - HOUR;
    const box = svg('svg', {width: w, height: h, viewBox: `0 0 ${w} ${h}`, class: 'timeline'});
    const x = (t) => ((Math.max(t, start) - start) / HOUR) * w;
    const segments = [];
    const first = rec.history[0];
    const since = Date.parse(rec.entry.since);
    // before the first transition we know of: its `from`, or unknown before `since`
    let state = first ? first.from : rec.entry.state;
    let from = first ? start : (Number.isNaN(since) ? start : Math.max(since, start));
    if (!first && from > start) segments.push([start, from, 'unknown']);
    for (const step of rec.history) {
      segments.push([from, step.t, state]);
      state = step.to;
      from = step.t;
    }
    segments.push([from, now, rec.entry.state || state]);
    for (const [a, b, s] of segments) {
      if (b <= start) continue;
      box.append(svg('rect', {x: x(a).toFixed(1), y: 0, height: h,
                              width: Math.max(0.8, x(b) - x(a)).toFixed(1), class: 't-' + s}));
    }
    const title = rec.history.length
      ? rec.history.map((e) => `${new Date(e.t).toLocaleTimeString()} ${e.from} → ${e.to}: ${e.reason}`)
        .join('\n')
      : `no transition in the last hour (${rec.entry.state})`;
    const label = svg('title', {});
    label.textContent = title;
    box.prepend(label);
    box.setAttribute('role', 'img');
    box.setAttribute('aria-label', `last hour: ${rec.history.length} transitions`);
    return box;
  }

  // -- the virtualised list ------------------------------------------------------------

  const view = (() => {
    const rowsEl = $('rows');
    let flat = []; // [{kind: 'svc', name} | {kind: 'be', key}]
    const shown = new Map(); // index -> element
    const dirty = new Set(); // backend keys
    const dirtySvc = new Set();
    let structure = true, header = true, eventsDirty = true, scheduled = false;
    let rowH = 46;
    let filterWords = [];

    function schedule() {
      if (scheduled) return;
      scheduled = true;
      requestAnimationFrame(frame);
    }

    function haystack(rec) {
      const e = rec.entry;
      return [rec.service, rec.name, e.address, e.state, e.override, rec.reason, e.progress,
              e.last_probe && e.last_probe.error].filter(Boolean).join(' ').toLowerCase();
    }

    function matches(rec) {
      if (!filterWords.length) return true;
      const text = haystack(rec);
      return filterWords.every((w) => text.includes(w));
    }

    function rebuild() {
      flat = [];
      const total = backends.size;
      for (const svc of services.values()) {
        if (svc.open === null) {
          svc.open = total <= OPEN_ALL_UP_TO || svc.up < svc.total || svc.panic;
        }
        let members = svc.names.map((n) => key(svc.name, n));
        if (filterWords.length) {
          const whole = filterWords.every((w) => svc.name.toLowerCase().includes(w));
          if (!whole) members = members.filter((k) => backends.has(k) && matches(backends.get(k)));
          if (!members.length) continue;
        }
        flat.push({kind: 'svc', name: svc.name, matched: members.length});
        if (svc.open || filterWords.length) for (const k of members) flat.push({kind: 'be', key: k});
      }
      rowsEl.style.height = flat.length * rowH + 'px';
      rowsEl.setAttribute('aria-rowcount', String(flat.length));
      for (const node of shown.values()) node.remove();
      shown.clear();
      const states = {up: 0, down: 0, drain: 0, maint: 0};
      for (const rec of backends.values()) if (rec.entry.state in states) states[rec.entry.state]++;
      $('counts').textContent = `${services.size} services, ${backends.size} backends: ` +
        `${states.up} up, ${states.down} down, ${states.drain} drain, ${states.maint} maint`;
    }

    function fillService(node, row) {
      const svc = services.get(row.name);
      node.className = 'row svc';
      node.dataset.service = svc.name;
      const toggle = el('button', 'toggle', (svc.open || filterWords.length ? '▾ ' : '▸ ') + svc.name);
      toggle.type = 'button';
      toggle.setAttribute('aria-expanded', String(Boolean(svc.open || filterWords.length)));
      toggle.addEventListener('click', () => {
        svc.open = !svc.open;
        restructure();
      });
      const counts = el('span', 'svc-up', `${svc.up}/${svc.total} up`);
      const badges = el('span', 'badges');
      if (svc.panic) badges.append(el('span', 'badge b-panic', 'PANIC'));
      if (svc.suspect) badges.append(el('span', 'badge b-suspect', 'SUSPECT'));
      if (summary.cluster) {
        badges.append(el('span', 'badge ' + (summary.cluster.ok ? 'b-ok' : 'b-panic'),
                         summary.cluster.ok ? 'cluster ok' : 'cluster NOT OK'));
      }
      const tally = {down: 0, drain: 0, maint: 0};
      for (const n of svc.names) {
        const s = (backends.get(key(svc.name, n)) || {entry: {}}).entry.state;
        if (s in tally) tally[s]++;
      }
      for (const [s, n] of Object.entries(tally)) if (n) badges.append(el('span', 'badge t-' + s, `${n} ${s}`));
      const extra = filterWords.length ? el('span', 'muted', `${row.matched} matching`) : el('span');
      node.replaceChildren(toggle, counts, badges, extra);
    }

    function fillBackend(node, row) {
      const rec = backends.get(row.key);
      node.className = 'row be';
      if (!rec) {
        node.replaceChildren();
        return;
      }
      const e = rec.entry;
      node.dataset.service = rec.service;
      node.dataset.backend = rec.name;
      node.dataset.state = e.state;
      const name = el('span', 'c-name');
      name.append(el('span', 'be-name', rec.name), el('span', 'addr', e.address || ''));
      const held = e.health && e.health !== e.state && e.state === 'up'
        ? `probed ${e.health}, published up` : '';
      const state = el('span', 'c-state');
      state.append(stateBadge(e.state, held));
      if (held) state.append(el('span', 'held', 'held up'));
      const probe = e.last_probe;
      const reason = rec.reason || (probe && probe.error) || '';
      const lat = el('span', 'c-lat');
      lat.append(el('span', 'lat-num', probe ? ms(probe.latency_ms) : '—'), sparkline(rec.lat));
      if (probe && !probe.ok) lat.classList.add('failed');
      const breaker = [e.progress, e.fails ? `${e.fails} failed` : '', e.damping]
        .filter(Boolean).join('; ');
      const since = el('span', 'c-since', ago(e.since));
      since.title = e.since || '';
      // The buttons outlive the row's updates (a probe result redraws the rest): a click
      // that lands while the row is redrawn still reaches its button.
      let actions = node.querySelector('.c-act');
      if (!actions || actions.dataset.key !== row.key) {
        actions = el('span', 'c-act');
        actions.dataset.key = row.key;
        for (const action of ['drain', 'maint', 'ready']) {
          const b = el('button', 'act', action);
          b.type = 'button';
          b.setAttribute('aria-label', `${action} ${rec.service}/${rec.name}`);
          b.addEventListener('click', () => act(rec.service, rec.name, action));
          actions.append(b);
        }
      }
      const line = el('span', 'c-time');
      line.append(timeline(rec));
      node.replaceChildren(name, state, el('span', 'c-weight', e.weight ?? ''),
                           el('span', 'c-reason', reason), since, lat,
                           el('span', 'c-breaker', breaker), el('span', 'c-override', e.override || '—'),
                           line, actions);
      node.querySelector('.c-reason').title = reason;
    }

    function fill(node, index) {
      const row = flat[index];
      node.setAttribute('aria-rowindex', String(index + 1));
      node.style.transform = `translateY(${index * rowH}px)`;
      if (row.kind === 'svc') fillService(node, row);
      else fillBackend(node, row);
    }

    function range() {
      const top = rowsEl.getBoundingClientRect().top;
      const first = Math.max(0, Math.floor(-top / rowH) - OVERSCAN);
      const last = Math.min(flat.length, Math.ceil((window.innerHeight - top) / rowH) + OVERSCAN);
      return [first, last];
    }

    function renderRows(refill) {
      const [first, last] = range();
      for (const [i, node] of shown) {
        if (i < first || i >= last) {
          node.remove();
          shown.delete(i);
        }
      }
      for (let i = first; i < last; i++) {
        let node = shown.get(i);
        const row = flat[i];
        if (!node) {
          node = el('div');
          node.setAttribute('role', 'row');
          fill(node, i);
          rowsEl.append(node);
          shown.set(i, node);
        } else if (refill || (row.kind === 'be' ? dirty.has(row.key) : dirtySvc.has(row.name))) {
          fill(node, i);
        }
      }
    }

    function renderHeader() {
      const eng = summary.engine;
      const engine = $('engine');
      if (eng) {
        const late = eng.lateness_ms || {}, lag = eng.loop_lag_ms || {};
        engine.textContent = `probe lateness p50 ${ms(late.p50 || 0)} · p99 ${ms(late.p99 || 0)} · ` +
          `max ${ms(late.max || 0)} · loop lag p99 ${ms(lag.p99 || 0)} · ` +
          `${eng.in_flight ?? 0} in flight · seq ${summary.seq ?? ''}`;
        engine.classList.toggle('late', (late.p99 || 0) > 100);
      }
      const badges = $('badges');
      badges.replaceChildren();
      if (summary.suspect) {
        const b = el('span', 'badge b-suspect', 'SUSPECT');
        b.title = `${summary.suspect.reason || ''} (since ${summary.suspect.since || '?'})`;
        badges.append(b, el('span', 'muted', summary.suspect.reason || ''));
      }
      if (summary.cluster) {
        const c = summary.cluster;
        const b = el('span', 'badge ' + (c.ok ? 'b-ok' : 'b-panic'),
                     c.ok ? 'cluster ok' : 'cluster NOT OK');
        badges.append(b, el('span', 'muted',
          `node ${c.node || '?'} · leader ${c.leader || '?'}` + (c.reason ? ` · ${c.reason}` : '')));
      }
      if (summary.persistence && !summary.persistence.ok) {
        badges.append(el('span', 'badge b-panic', 'NOT PERSISTED'),
                      el('span', 'muted', summary.persistence.last_error || ''));
      }
      const sinks = $('sinks');
      sinks.replaceChildren();
      for (const [name, s] of Object.entries(summary.sinks || {})) {
        const card = el('span', 'sink ' + (s.ok ? 'ok' : 'failing'));
        card.dataset.sink = name;
        card.append(el('span', 'sink-name', name), el('span', 'badge ' + (s.ok ? 'b-ok' : 'b-panic'),
                    s.ok ? 'ok' : 'failing'),
                    el('span', 'muted', `applied ${s.applied} · pending ${s.pending} · ` +
                       `failures ${s.failures}`));
        if (s.last_error) card.append(el('span', 'sink-error', s.last_error));
        sinks.append(card);
      }
    }

    function renderEvents() {
      const list = $('events');
      list.replaceChildren();
      for (const ev of recent.slice().reverse()) {
        const item = el('li', 'ev');
        const time = el('time', 'muted', new Date(Date.parse(ev.time)).toLocaleTimeString());
        time.dateTime = ev.time;
        const who = ev.backend ? `${ev.service}/${ev.backend}` : ev.service;
        item.append(time, el('span', 'ev-who', who), stateBadge(ev.from), el('span', 'arrow', '→'),
                    stateBadge(ev.to), el('span', 'ev-reason', ev.reason));
        list.append(item);
      }
    }

    function frame() {
      scheduled = false;
      const measured = parseFloat(getComputedStyle(rowsEl).getPropertyValue('--row-h'));
      if (measured && measured !== rowH) {
        rowH = measured;
        structure = true;
      }
      if (structure || (filterWords.length && (dirty.size || dirtySvc.size))) {
        rebuild();
        structure = false;
      }
      renderRows(false);
      if (header) renderHeader();
      if (eventsDirty) renderEvents();
      header = eventsDirty = false;
      dirty.clear();
      dirtySvc.clear();
      if (firstLoad && flat.length) {
        firstLoad = false;
        document.body.dataset.painted = String(Math.round(performance.now()));
      }
    }

    function restructure() {
      structure = true;
      schedule();
    }

    $('filter').addEventListener('input', (ev) => {
      filterWords = ev.target.value.toLowerCase().split(/\s+/).filter(Boolean);
      restructure();
    });
    $('expand').addEventListener('click', () => {
      for (const svc of services.values()) svc.open = true;
      restructure();
    });
    $('collapse').addEventListener('click', () => {
      for (const svc of services.values()) svc.open = false;
      restructure();
    });
    window.addEventListener('scroll', () => schedule(), {passive: true});
    window.addEventListener('resize', () => restructure());
    setInterval(() => { // relative times and timelines move on by themselves
      renderRows(true);
    }, 10e3);

    return {
      touch(k) { dirty.add(k); schedule(); },
      touchService(name) { dirtySvc.add(name); schedule(); },
      restructure,
      headerChanged() { header = true; schedule(); },
      eventsChanged() { eventsDirty = true; schedule(); },
    };
  })();

  // -- the token and the admin buttons -------------------------------------------------

  let asking = null;

  function askToken(why) {
    if (asking) return asking;
    const dialog = $('token-dialog');
    $('token-why').textContent = why;
    $('token-input').value = '';
    asking = new Promise((resolve) => {
      const done = (value) => {
        $('token-form').removeEventListener('submit', submit);
        $('token-cancel').removeEventListener('click', cancel);
        dialog.close();
        asking = null;
        resolve(value);
      };
      const submit = (ev) => {
        ev.preventDefault();
        const value = $('token-input').value.trim();
        token = value || null;
        done(token);
      };
      const cancel = () => done(null);
      $('token-form').addEventListener('submit', submit);
      $('token-cancel').addEventListener('click', cancel);
      dialog.showModal();
      $('token-input').focus();
    });
    return asking;
  }

  function notice(text, kind) {
    const box = $('notice');
    box.className = 'notice ' + kind;
    box.textContent = text;
  }

  const authHeaders = () => (token ? {Authorization: 'Bearer ' + token} : {});

  async function errorOf(response) {
    try {
      const body = await response.json();
      return body.error || JSON.stringify(body);
    } catch {
      return response.statusText;
    }
  }

  async function act(service, name, action) {
    const target = `${service}/${name}`;
    const url = `/v1/backends/${encodeURIComponent(service)}/${encodeURIComponent(name)}/${action}`;
    for (let attempt = 0; ; attempt++) {
      let response;
      try {
        response = await fetch(url, {method: 'POST', headers: authHeaders(), cache: 'no-store'});
      } catch (err) {
        notice(`${target}: ${action} not sent: ${err.message}`, 'error');
        return;
      }
      if (response.status === 401 && token === null && attempt === 0) {
        if (await askToken(`${action} ${target} needs the API token.`) === null) {
          notice(`${target}: ${action} refused: 401 ${await errorOf(response)}`, 'error');
          return;
        }
        continue;
      }
      if (!response.ok) {
        if (response.status === 401) token = null; // wrong: ask again next time
        notice(`${target}: ${action} refused: ${response.status} ${await errorOf(response)}`,
               'error');
        return;
      }
      const body = await response.json();
      const changes = (body.events || []).map((e) => `${e.from} → ${e.to}`).join(', ');
      notice(`${target}: ${action} (${changes || 'no change'})`, 'ok');
      return;
    }
  }

  $('token-button').addEventListener('click', async () => {
    await askToken('Used for live updates and for drain / maint / ready.');
    stream.wake();
  });

  // -- the stream ----------------------------------------------------------------------

  function setConn(state, text) {
    const conn = $('conn');
    conn.className = 'conn ' + state;
    conn.textContent = text;
    document.body.dataset.live = state;
  }

  // An EventSource cannot send the Authorization header (nor tell a 401 from a network
  // error), so the stream is read with fetch; it reconnects by itself, resuming with
  // Last-Event-ID like an EventSource would.
  const stream = (() => {
    let wakeup = null;
    const sleep = (t) => new Promise((resolve) => {
      const timer = setTimeout(resolve, t);
      wakeup = () => { clearTimeout(timer); resolve(); };
    });

    function dispatch(kind, data) {
      const doc = JSON.parse(data);
      if (kind === 'event') applyEvent(doc);
      else if (kind === 'state') applyService(doc);
      else if (kind === 'summary') applySummary(doc);
    }

    async function read(response, controller) {
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '', kind = 'message', data = [];
      let watchdog = setTimeout(() => controller.abort(), STALE_MS);
      try {
        for (;;) {
          const {value, done} = await reader.read();
          if (done) return;
          clearTimeout(watchdog);
          watchdog = setTimeout(() => controller.abort(), STALE_MS);
          buffer += value;
          let nl;
          while ((nl = buffer.indexOf('\n')) >= 0) {
            const line = buffer.slice(0, nl).replace(/\r$/, '');
            buffer = buffer.slice(nl + 1);
            if (line === '') {
              if (data.length) dispatch(kind, data.join('\n'));
              kind = 'message';
              data = [];
            } else if (!line.startsWith(':')) {
              const colon = line.indexOf(':');
              const field = colon < 0 ? line : line.slice(0, colon);
              const val = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
              if (field === 'event') kind = val;
              else if (field === 'data') data.push(val);
            }
          }
        }
      } finally {
        clearTimeout(watchdog);
      }
    }

    async function loop() {
      let delay = 500, refused = false;
      for (;;) {
        const controller = new AbortController();
        const headers = Object.assign({Accept: 'text/event-stream'}, authHeaders());
        let url = '/v1/stream';
        if (lastSeq !== null) headers['Last-Event-ID'] = String(lastSeq);
        else url += '?after=0'; // the held events seed the timelines and the event list
        try {
          const response = await fetch(url, {headers, cache: 'no-store', signal: controller.signal});
          if (response.status === 401) {
            const why = token === null ? 'Live updates need the API token.'
              : `401 ${await errorOf(response)}: the token was refused.`;
            if (token !== null) {
              notice(why, 'error');
              refused = true;
            }
            token = null;
            setConn('token', 'needs the token');
            if (await askToken(why) === null) await sleep(3600e3);
            continue;
          }
          if (!response.ok) throw new Error(`${response.status} ${await errorOf(response)}`);
          setConn('live', 'live');
          if (refused) notice('', ''); // the refused token's message is answered now
          refused = false;
          delay = 500;
          await read(response, controller);
          setConn('down', 'reconnecting');
        } catch (err) {
          setConn('down', `reconnecting (${err.message || err})`);
        }
        await sleep(delay);
        delay = Math.min(delay * 2, 10e3);
      }
    }

    return {start: loop, wake: () => wakeup && wakeup()};
  })();

  async function start() {
    try {
      const response = await fetch('/v1/state', {headers: authHeaders(), cache: 'no-store'});
      if (response.ok) applyState(await response.json());
    } catch (err) {
      setConn('down', `cannot load /v1/state (${err.message})`);
    }
    stream.start();
  }

  start();
})();

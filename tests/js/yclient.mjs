// A stock Yjs client (yjs + y-websocket's WebsocketProvider) driven line by line from pytest.
//
// stdin: one JSON command per line, {"id": n, "cmd": "...", ...}; stdout: one JSON reply per
// command, {"id": n, "ok": true, ...} or {"id": n, "ok": false, "error": "..."}. Every wait
// has a timeout (timeout_ms), so the driver never hangs. Values cross the pipe as JSON with
// a few markers: {"$ymap": {...}} a nested Y.Map, {"$yarray": [...]} a Y.Array,
// {"$ytext": "..."} a Y.Text, {"$bytes": "<hex>"} a Uint8Array, {"$jsbigint": "<digits>"} a
// JavaScript BigInt, {"$undefined": true}. Reads turn Uint8Array into {"$bytes": "<hex>"}.
import * as readline from 'node:readline'
import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

let doc = null
let provider = null
const events = []
const waiters = new Set()

const origWarn = console.warn
console.warn = (...args) => {
  events.push({ type: 'warn', text: args.map(String).join(' ') })
  poke()
}
const origError = console.error
console.error = (...args) => {
  events.push({ type: 'error', text: args.map(String).join(' ') })
  origError(...args)
  poke()
}

function poke () {
  for (const w of Array.from(waiters)) w()
}

// Resolve when check() returns a non-undefined value, re-checked on every document,
// awareness or provider event; reject after timeoutMs.
function waitFor (check, timeoutMs, what) {
  return new Promise((resolve, reject) => {
    const first = check()
    if (first !== undefined) return resolve(first)
    const timer = setTimeout(() => {
      waiters.delete(tryIt)
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`))
    }, timeoutMs)
    function tryIt () {
      const got = check()
      if (got !== undefined) {
        clearTimeout(timer)
        waiters.delete(tryIt)
        resolve(got)
      }
    }
    waiters.add(tryIt)
  })
}

function toY (v) {
  if (v === null || typeof v !== 'object') return v
  if (Array.isArray(v)) return v.map(toY)
  if ('$ymap' in v) {
    const m = new Y.Map()
    for (const [k, x] of Object.entries(v.$ymap)) m.set(k, toY(x))
    return m
  }
  if ('$yarray' in v) {
    const a = new Y.Array()
    a.push(v.$yarray.map(toY))
    return a
  }
  if ('$ytext' in v) return new Y.Text(v.$ytext)
  if ('$bytes' in v) return Uint8Array.from(Buffer.from(v.$bytes, 'hex'))
  if ('$jsbigint' in v) return BigInt(v.$jsbigint)
  if ('$undefined' in v) return undefined
  const out = {}
  for (const [k, x] of Object.entries(v)) out[k] = toY(x)
  return out
}

function fromY (v) {
  if (v instanceof Y.Map) {
    const out = {}
    for (const [k, x] of v.entries()) out[k] = fromY(x)
    return out
  }
  if (v instanceof Y.Array) return v.toArray().map(fromY)
  if (v instanceof Y.Text) return v.toString()
  if (v instanceof Uint8Array) return { $bytes: Buffer.from(v).toString('hex') }
  if (typeof v === 'bigint') return { $jsbigint: v.toString() }
  if (v === undefined) return null
  if (Array.isArray(v)) return v.map(fromY)
  if (v !== null && typeof v === 'object') {
    const out = {}
    for (const [k, x] of Object.entries(v)) out[k] = fromY(x)
    return out
  }
  return v
}

function canonical (v) {
  if (Array.isArray(v)) return '[' + v.map(canonical).join(',') + ']'
  if (v !== null && typeof v === 'object') {
    return '{' + Object.keys(v).sort().map((k) => JSON.stringify(k) + ':' + canonical(v[k])).join(',') + '}'
  }
  return JSON.stringify(v)
}

function fields () {
  return doc.getMap('fields')
}

// The container at path[:-1] and the last key; throws if a step is missing.
function locate (path) {
  let cur = fields()
  for (const step of path.slice(0, -1)) {
    const next = cur.get(step)
    if (!(next instanceof Y.Map)) throw new Error(`no Y.Map at ${JSON.stringify(step)}`)
    cur = next
  }
  return [cur, path[path.length - 1]]
}

function valueAt (path) {
  let cur = fields()
  for (const step of path) {
    if (!(cur instanceof Y.Map) || !cur.has(step)) return { present: false }
    cur = cur.get(step)
  }
  return { present: true, value: cur }
}

function apply (op) {
  const [map, key] = locate(op.path)
  if (op.cmd === 'set') map.set(key, toY(op.value))
  else if (op.cmd === 'delete') map.delete(key)
  else throw new Error(`unknown op ${op.cmd}`)
}

const handlers = {
  async connect (c) {
    doc = new Y.Doc()
    doc.on('update', poke)
    provider = new WebsocketProvider(c.url, c.room, doc, {
      WebSocketPolyfill: WebSocket,
      params: c.token == null ? {} : { token: c.token },
      disableBc: true,
      maxBackoffTime: c.max_backoff_ms ?? 500
    })
    provider.on('status', (e) => { events.push({ type: 'status', status: e.status }); poke() })
    provider.on('sync', (s) => { events.push({ type: 'sync', synced: s }); poke() })
    provider.on('connection-close', (e) => {
      events.push({ type: 'close', code: e ? e.code : null, reason: e ? String(e.reason) : null })
      poke()
    })
    provider.on('connection-error', () => { events.push({ type: 'connection-error' }); poke() })
    provider.awareness.on('change', poke)
    if (c.awareness != null) provider.awareness.setLocalState(c.awareness)
    return { client_id: doc.clientID }
  },
  async wait_synced (c) {
    await waitFor(() => (provider.synced ? true : undefined), c.timeout_ms, 'sync')
    return {}
  },
  async set (c) { apply(c); return {} },
  async delete (c) { apply(c); return {} },
  async transact (c) {
    doc.transact(() => { for (const op of c.ops) apply(op) })
    return {}
  },
  async get (c) {
    const at = valueAt(c.path ?? [])
    if (!at.present) return { present: false }
    const v = at.value
    return {
      present: true,
      value: fromY(v),
      type: typeof v,
      integer: typeof v === 'number' && Number.isInteger(v),
      ctor: v !== null && v !== undefined ? v.constructor.name : null
    }
  },
  async wait (c) {
    const want = c.absent ? undefined : canonical(c.equals)
    const value = await waitFor(() => {
      const at = valueAt(c.path)
      if (c.absent) return at.present ? undefined : null
      if (!at.present) return undefined
      const v = fromY(at.value)
      return canonical(v) === want ? v : undefined
    }, c.timeout_ms, `${JSON.stringify(c.path)} = ${c.absent ? '(absent)' : want}`)
    return { value }
  },
  async wait_event (c) {
    await waitFor(() => {
      const n = events.filter((e) => e.type === c.type && (c.status == null || e.status === c.status)).length
      return n >= (c.count ?? 1) ? n : undefined
    }, c.timeout_ms, `${c.count ?? 1} ${c.type} event(s)`)
    return { events }
  },
  async events () { return { events, synced: provider ? provider.synced : false } },
  async awareness_set (c) {
    provider.awareness.setLocalState(c.state)
    return {}
  },
  async awareness_get () {
    const states = {}
    for (const [k, v] of provider.awareness.getStates()) states[k] = v
    return { states }
  },
  async wait_awareness (c) {
    const states = await waitFor(() => {
      const s = provider.awareness.getStates().get(c.client)
      if (c.present === false) return s === undefined ? {} : undefined
      if (s === undefined) return undefined
      return c.equals == null || canonical(s) === canonical(c.equals) ? s : undefined
    }, c.timeout_ms, `awareness of ${c.client}`)
    return { state: states }
  },
  async disconnect () { provider.disconnect(); return {} },
  async reconnect () { provider.connect(); return {} },
  async quit () {
    if (provider) provider.destroy()
    setTimeout(() => process.exit(0), 50)
    return {}
  }
}

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', async (line) => {
  let c
  try {
    c = JSON.parse(line)
  } catch (e) {
    process.stdout.write(JSON.stringify({ id: null, ok: false, error: `bad command: ${e}` }) + '\n')
    return
  }
  try {
    const h = handlers[c.cmd]
    if (!h) throw new Error(`unknown command ${c.cmd}`)
    const out = await h(c)
    process.stdout.write(JSON.stringify({ id: c.id, ok: true, ...out }) + '\n')
  } catch (e) {
    process.stdout.write(JSON.stringify({ id: c.id, ok: false, error: String(e && e.message ? e.message : e) }) + '\n')
  }
})
rl.on('close', () => {
  if (provider) provider.destroy()
  process.exit(0)
})
void origWarn

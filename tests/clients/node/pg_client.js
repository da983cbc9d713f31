#!/usr/bin/env node
// node-postgres driver of the pgveil real-client tests (see ../README.md).
//
//   node pg_client.js write <DATABASE_URL> <writer_tag> [--prepare]
//   node pg_client.js read  <DATABASE_URL>              [--prepare]
//
// node-postgres uses the extended protocol whenever a query has values: Parse
// without parameter types (the server infers them), Bind with every value as
// text except Buffers (bytea), which it sends in binary format, and text
// results. Without --prepare statements are unnamed; with it every distinct
// statement gets a name and is parsed once per connection.
//
// Every result column is read as the raw text PostgreSQL sent (bytea goes
// through pg's own parser to a Buffer), then brought to the canonical form of
// ../README.md, the same bytes the Python drivers print.
'use strict';

const fs = require('fs');
const path = require('path');
const crypto = require('crypto');

let pg;
try {
  pg = require('pg');
} catch (e) {
  process.stderr.write(`pg_client.js: node-postgres is not installed (${e.message}); run tests/clients/setup.sh\n`);
  process.exit(3);
}

const FIXTURE_PATH = path.join(__dirname, '..', 'fixture.json');
const TABLES = ['lab_results', 'patients'];
const SKIPPED_COLUMNS = { lab_results: new Set(['id', 'patient_id']), patients: new Set(['id', 'created_at']) };
const EXTRA_COLUMNS = { lab_results: { lab: 'text' }, patients: {} };
const TAG_PREFIX_COLUMNS = { lab_results: [], patients: ['first_name', 'ssn'] };
const TAG_RE = /^[A-Za-z0-9_-]{1,40}$/;
const TYPE_OIDS = {
  bool: 16, bytea: 17, int8: 20, int2: 21, int4: 23, text: 25, json: 114, float4: 700, float8: 701,
  varchar: 1043, date: 1082, time: 1083, timestamp: 1114, timestamptz: 1184, numeric: 1700, uuid: 2950,
  jsonb: 3802,
};

class ClientError extends Error {}

// ---------------------------------------------------------------------------
// Fixture

const baseType = (logical) => logical.split('(')[0].trim();

function numericScale(logical) {
  const m = /^numeric\(\s*\d+\s*(?:,\s*(\d+)\s*)?\)$/.exec(logical);
  return m ? Number(m[1] || 0) : null;
}

function expand(value) {
  if (value !== null && typeof value === 'object') {
    const extra = Object.keys(value).filter((k) => !['prefix', 'repeat', 'times', 'suffix'].includes(k));
    if (extra.length || !('repeat' in value)) throw new ClientError(`fixture: bad value marker ${JSON.stringify(value)}`);
    return (value.prefix || '') + value.repeat.repeat(Number(value.times)) + (value.suffix || '');
  }
  return value;
}

function loadFixture() {
  const fx = JSON.parse(fs.readFileSync(FIXTURE_PATH, 'utf8'));
  const expandRow = (table, row) => {
    for (const k of Object.keys(row)) {
      if (!(k in fx.columns[table])) throw new ClientError(`fixture: ${table} row has unknown column ${k}`);
      row[k] = expand(row[k]);
    }
  };
  for (const table of TABLES) for (const row of fx[table]) expandRow(table, row);
  for (const u of fx.updates) expandRow(u.table, u.set);
  for (const r of fx.returning) expandRow(r.table, r.row);
  return fx;
}

function checkTag(tag) {
  if (!TAG_RE.test(tag)) throw new ClientError(`writer tag ${JSON.stringify(tag)} must match ${TAG_RE.source}`);
  return tag;
}

function tagged(table, column, value, tag) {
  return value !== null && value !== undefined && TAG_PREFIX_COLUMNS[table].includes(column) ? `${tag}:${value}` : value;
}

// ---------------------------------------------------------------------------
// Date and time text (fixture syntax and PostgreSQL's ISO output)

const TIME_RE = /^(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?$/;
const TS_RE = /^(\d{4,})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(Z|[+-]\d{2}(?::?\d{2}(?::?\d{2})?)?)?$/;
const pad = (n, w) => String(n).padStart(w, '0');
const micros = (frac) => (frac ? Number(frac.padEnd(6, '0')) : 0);
const fmtTime = (h, mi, s, us) => `${pad(h, 2)}:${pad(mi, 2)}:${pad(s, 2)}` + (us ? `.${pad(us, 6)}` : '');

function canonTime(s) {
  const m = TIME_RE.exec(s);
  if (!m) throw new ClientError(`bad time ${JSON.stringify(s)}`);
  return fmtTime(+m[1], +m[2], +m[3], micros(m[4]));
}

function canonDate(s) {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(s)) throw new ClientError(`bad date ${JSON.stringify(s)} (DateStyle must be ISO)`);
  return s;
}

// Days since 1970-01-01 of a proleptic Gregorian date, and back.
function daysFromCivil(y, m, d) {
  y -= m <= 2 ? 1 : 0;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const doy = Math.floor((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5) + d - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}

function civilFromDays(z) {
  z += 719468;
  const era = Math.floor(z / 146097);
  const doe = z - era * 146097;
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36524) - Math.floor(doe / 146096)) / 365);
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const d = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const m = mp + (mp < 10 ? 3 : -9);
  return [yoe + era * 400 + (m <= 2 ? 1 : 0), m, d];
}

function offsetSeconds(s) {
  if (s === 'Z') return 0;
  const digits = s.slice(1).replace(/:/g, '');
  const secs = Number(digits.slice(0, 2)) * 3600 + Number(digits.slice(2, 4) || 0) * 60 + Number(digits.slice(4, 6) || 0);
  return s[0] === '-' ? -secs : secs;
}

// 'YYYY-MM-DD HH:MM:SS[.f][offset]' -> canonical; with an offset, converted to UTC and suffixed '+00'.
function canonTimestamp(s, withTz) {
  const m = TS_RE.exec(s);
  if (!m || (m[8] === undefined) === withTz) {
    throw new ClientError(`bad ${withTz ? 'timestamptz' : 'timestamp'} ${JSON.stringify(s)}`);
  }
  let [y, mo, d, h, mi, sec] = [+m[1], +m[2], +m[3], +m[4], +m[5], +m[6]];
  const us = micros(m[7]);
  if (withTz) {
    let t = daysFromCivil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offsetSeconds(m[8]);
    const days = Math.floor(t / 86400);
    t -= days * 86400;
    [y, mo, d] = civilFromDays(days);
    [h, mi, sec] = [Math.floor(t / 3600), Math.floor((t % 3600) / 60), t % 60];
  }
  return `${pad(y, 4)}-${pad(mo, 2)}-${pad(d, 2)} ${fmtTime(h, mi, sec, us)}` + (withTz ? '+00' : '');
}

// ---------------------------------------------------------------------------
// Floats: shortest round-trip digits, laid out exactly as PostgreSQL prints them.

function pgFloatStyle(negative, digits, exp10, fixedMax) {
  let s;
  if (exp10 >= -4 && exp10 < fixedMax) {
    if (exp10 >= 0) {
      s = digits.length <= exp10 + 1 ? digits + '0'.repeat(exp10 + 1 - digits.length)
        : `${digits.slice(0, exp10 + 1)}.${digits.slice(exp10 + 1)}`;
    } else {
      s = `0.${'0'.repeat(-exp10 - 1)}${digits}`;
    }
  } else {
    s = digits[0] + (digits.length > 1 ? `.${digits.slice(1)}` : '') + 'e' + (exp10 < 0 ? '-' : '+') + pad(Math.abs(exp10), 2);
  }
  return (negative ? '-' : '') + s;
}

// Exact rationals as [numerator, denominator] BigInt pairs (denominator > 0).
const pow = (b, e) => b ** BigInt(e);
const ratLess = (a, b) => a[0] * b[1] < b[0] * a[1];
const ratSub = (a, b) => [a[0] * b[1] - b[0] * a[1], a[1] * b[1]];
const ratTimes2 = (m, e) => (e >= 0 ? [m * pow(2n, e), 1n] : [m, pow(2n, -e)]);
const ratTimes10 = (n, k) => (k >= 0 ? [n * pow(10n, k), 1n] : [n, pow(10n, -k)]);
const ratAbs = (a) => [a[0] < 0n ? -a[0] : a[0], a[1]];

// Exact value of |x| and the open interval of reals that round to it.
function decompose(x, bits) {
  const view = new DataView(new ArrayBuffer(8));
  let biased; let frac; let mbits; let bias;
  if (bits === 64) {
    view.setFloat64(0, Math.abs(x));
    const hi = view.getUint32(0);
    biased = (hi >>> 20) & 0x7ff;
    frac = (BigInt(hi & 0xfffff) << 32n) | BigInt(view.getUint32(4));
    [mbits, bias] = [52, 1023];
  } else {
    view.setFloat32(0, Math.abs(x));
    const w = view.getUint32(0);
    biased = (w >>> 23) & 0xff;
    frac = BigInt(w & 0x7fffff);
    [mbits, bias] = [23, 127];
  }
  const m = biased === 0 ? frac : frac | (1n << BigInt(mbits));
  const e = biased === 0 ? 1 - bias - mbits : biased - bias - mbits;
  // In units of 2^(e-2): value = 4m, half gap up = 2, half gap down = 2 (1 just above a power of two).
  const down = frac === 0n && biased > 1 ? 1n : 2n;
  return { value: ratTimes2(4n * m, e - 2), low: ratTimes2(4n * m - down, e - 2), high: ratTimes2(4n * m + 2n, e - 2) };
}

// [n, k]: the shortest n * 10^k strictly inside x's rounding interval, the
// closest to x among those, the even n on a tie. PostgreSQL's float4out and
// float8out (Ryu, bounds excluded) choose the same digits.
function shortestDigits(x, bits) {
  const { value, low, high } = decompose(x, bits);
  let e10 = Math.floor(Math.log10(Math.abs(x)));
  while (ratLess(value, ratTimes10(1n, e10))) e10--;
  while (!ratLess(value, ratTimes10(1n, e10 + 1))) e10++;
  for (let p = 1; p < 30; p++) {
    const k = e10 - p + 1;
    const unit = ratTimes10(1n, k);
    const n = (value[0] * unit[1]) / (value[1] * unit[0]); // floor: both positive
    let best = null;
    for (const c of [n, n + 1n]) {
      const cv = ratTimes10(c, k);
      if (!(ratLess(low, cv) && ratLess(cv, high))) continue;
      const dist = ratAbs(ratSub(cv, value));
      if (best === null || ratLess(dist, best.dist) || (!ratLess(best.dist, dist) && c % 2n === 0n)) best = { c, dist };
    }
    if (best) return [best.c, k];
  }
  throw new Error(`no decimal representation for ${x}`);
}

function canonFloat(x, bits) {
  if (Number.isNaN(x)) return 'NaN';
  if (bits === 32) x = Math.fround(x);
  if (x === Infinity) return 'Infinity';
  if (x === -Infinity) return '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0' : '0';
  const [n, k] = shortestDigits(x, bits);
  const s = n.toString();
  return pgFloatStyle(x < 0, s.replace(/0+$/, ''), k + s.length - 1, bits === 64 ? 15 : 6);
}

// ---------------------------------------------------------------------------
// JSON: parse keeping number literals, re-serialise with sorted keys, no spaces.

function parseJsonKeepingNumbers(text) {
  let i = 0;
  const ws = () => { while (i < text.length && ' \t\n\r'.includes(text[i])) i++; };
  const fail = () => { throw new ClientError(`invalid JSON from the server at ${i}: ${JSON.stringify(text.slice(0, 200))}`); };
  const token = (re) => {
    re.lastIndex = i;
    const m = re.exec(text);
    if (!m) fail();
    i += m[0].length;
    return m[0];
  };
  const STRING = /"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y;
  const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
  const LITERAL = /true|false|null/y;
  function value() {
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      const obj = new Map();
      ws();
      if (text[i] === '}') { i++; return obj; }
      for (;;) {
        ws();
        const key = JSON.parse(token(STRING));
        ws();
        if (text[i++] !== ':') fail();
        obj.set(key, value());
        ws();
        if (text[i] === ',') { i++; continue; }
        if (text[i++] !== '}') fail();
        return obj;
      }
    }
    if (c === '[') {
      i++;
      const arr = [];
      ws();
      if (text[i] === ']') { i++; return arr; }
      for (;;) {
        arr.push(value());
        ws();
        if (text[i] === ',') { i++; continue; }
        if (text[i++] !== ']') fail();
        return arr;
      }
    }
    if (c === '"') return JSON.parse(token(STRING));
    if (c === 't' || c === 'f' || c === 'n') return JSON.parse(token(LITERAL));
    return { number: token(NUMBER) };
  }
  const v = value();
  ws();
  if (i !== text.length) fail();
  return v;
}

const utf8Compare = (a, b) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));

function jsonSerialize(v) {
  if (v === null) return 'null';
  if (v === true) return 'true';
  if (v === false) return 'false';
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(jsonSerialize).join(',')}]`;
  if (v instanceof Map) {
    const keys = [...v.keys()].sort(utf8Compare);
    return `{${keys.map((k) => `${JSON.stringify(k)}:${jsonSerialize(v.get(k))}`).join(',')}}`;
  }
  return v.number;
}

const jsonCanonical = (text) => jsonSerialize(parseJsonKeepingNumbers(text));

// ---------------------------------------------------------------------------
// Canonical values

function short(v, n = 80) {
  const r = JSON.stringify(v);
  return r === undefined || r.length <= n ? String(r) : `${r.slice(0, n)}... (${r.length} chars)`;
}

// node-postgres sees PostgreSQL's own text output, so it also checks that the
// text is laid out exactly as PostgreSQL prints it (with the default
// extra_float_digits = 1): a proxy that re-creates the text must match it.
function textShapeProblem(t, raw) {
  const frac = /\.(\d+)/.exec(raw);
  switch (t) {
    case 'float4': case 'float8': {
      const want = canonFloat(Number(raw), t === 'float4' ? 32 : 64);
      return raw === want ? null : `PostgreSQL prints this ${t} as ${JSON.stringify(want)}`;
    }
    case 'time': case 'timestamp': case 'timestamptz':
      if (frac && frac[1].endsWith('0')) return 'PostgreSQL drops trailing zeros of fractional seconds';
      if (t === 'timestamptz' && !/[+-]\d{2}(?::(?!00$)\d{2}|:\d{2}:\d{2})?$/.test(raw)) {
        return 'PostgreSQL prints the UTC offset as +HH, +HH:MM or +HH:MM:SS (no :00 minutes alone)';
      }
      return null;
    case 'int2': case 'int4': case 'int8':
      return BigInt(raw).toString() === raw ? null : 'not a plain decimal integer';
    case 'uuid':
      return /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(raw) ? null : 'PostgreSQL prints uuids lowercase and hyphenated';
    default:
      return null;
  }
}

// A value as node-postgres returned it (raw text; Buffer for bytea) -> canonical string.
function canonical(logical, value, where) {
  if (value === null || value === undefined) return null;
  const t = baseType(logical);
  if (t === 'bytea') {
    if (!Buffer.isBuffer(value)) throw new ClientError(`${where}: expected a Buffer for bytea, got ${short(value)}`);
    return `\\x${value.toString('hex')}`;
  }
  if (typeof value !== 'string') throw new ClientError(`${where}: expected text from the type parser, got ${typeof value}`);
  if (where !== 'fixture') {
    const problem = textShapeProblem(t, value);
    if (problem) throw new ClientError(`${where}: text ${short(value)} is not as PostgreSQL prints a ${logical}: ${problem}`);
  }
  switch (t) {
    case 'text': case 'varchar': return value;
    case 'uuid': return value.toLowerCase();
    case 'numeric': return value;
    case 'float4': return canonFloat(Number(value), 32);
    case 'float8': return canonFloat(Number(value), 64);
    case 'int2': case 'int4': case 'int8': return BigInt(value).toString();
    case 'bool':
      if (value !== 't' && value !== 'f') throw new ClientError(`${where}: bad bool text ${short(value)}`);
      return value === 't' ? 'true' : 'false';
    case 'date': return canonDate(value);
    case 'time': return canonTime(value);
    case 'timestamp': return canonTimestamp(value, false);
    case 'timestamptz': return canonTimestamp(value, true);
    case 'json': case 'jsonb': return jsonCanonical(value);
    default: throw new ClientError(`unsupported logical type ${logical}`);
  }
}

// numeric fixture text rounded half away from zero to the column's scale, as PostgreSQL does.
function roundNumeric(text, scale) {
  const m = /^([+-]?)(\d+)(?:\.(\d*))?$/.exec(text);
  if (!m) throw new ClientError(`fixture numeric ${short(text)}: only plain decimals are supported`);
  const frac = m[3] || '';
  let n = BigInt(m[2] + frac);
  let have = frac.length;
  if (scale !== null && have > scale) {
    const div = 10n ** BigInt(have - scale);
    const q = n / div;
    n = 2n * (n % div) >= div ? q + 1n : q;
    have = scale;
  } else if (scale !== null) {
    n *= 10n ** BigInt(scale - have);
    have = scale;
  }
  let digits = n.toString().padStart(have + 1, '0');
  if (have > 0) digits = `${digits.slice(0, digits.length - have)}.${digits.slice(digits.length - have)}`;
  return (m[1] === '-' && n !== 0n ? '-' : '') + digits;
}

// Fixture text -> the canonical string PostgreSQL should give back.
function expected(logical, value) {
  if (value === null || value === undefined) return null;
  const t = baseType(logical);
  switch (t) {
    case 'numeric': return value === 'NaN' ? 'NaN' : roundNumeric(value, numericScale(logical));
    case 'bool':
      if (value !== 'true' && value !== 'false') throw new ClientError(`bad bool ${short(value)}`);
      return value;
    case 'int2': case 'int4': case 'int8': return BigInt(value).toString();
    case 'bytea': return value.toLowerCase();
    case 'date': return canonDate(value);
    default: return canonical(logical, value, 'fixture');
  }
}

// Fixture text -> what node-postgres binds: the text itself, a Buffer for bytea.
function bindValue(logical, value) {
  if (value === null || value === undefined) return null;
  if (baseType(logical) === 'bytea') {
    if (!value.startsWith('\\x')) throw new ClientError(`bad bytea ${short(value)}`);
    return Buffer.from(value.slice(2), 'hex');
  }
  return value;
}

// ---------------------------------------------------------------------------
// Write plan (same statements, same order as pgveil_clients.write_plan)

function rowColumns(fx, table, row, tag) {
  const columns = [];
  const values = [];
  if (table === 'lab_results') { columns.push(['lab', 'text']); values.push(tag); }
  for (const [name, logical] of Object.entries(fx.columns[table])) {
    if (name in row) { columns.push([name, logical]); values.push(tagged(table, name, row[name], tag)); }
  }
  return { columns, values };
}

function writePlan(fx, tag) {
  const ops = [];
  for (const table of TABLES) {
    for (const row of fx[table]) {
      ops.push({ kind: 'insert', table, ...rowColumns(fx, table, row, tag), returning: table === 'patients' ? 'id' : null });
    }
  }
  ops.push({ kind: 'select_ids', table: 'lab_results', columns: [['lab', 'text']], values: [tag] });
  for (const u of fx.updates) {
    const cols = Object.keys(u.set);
    ops.push({
      kind: 'update', table: u.table, target: u.row,
      columns: cols.map((c) => [c, fx.columns[u.table][c]]),
      values: cols.map((c) => tagged(u.table, c, u.set[c], tag)),
    });
  }
  for (const r of fx.returning) {
    const rc = rowColumns(fx, r.table, r.row, tag);
    ops.push({ kind: 'insert', table: r.table, ...rc, returning: rc.columns.filter(([c]) => c in fx.columns[r.table]) });
  }
  return ops;
}

function opSql(op) {
  const ph = (i) => `$${i}`;
  if (op.kind === 'insert') {
    let s = `INSERT INTO public.${op.table} (${op.columns.map(([c]) => c).join(', ')}) VALUES (${op.columns.map((_, i) => ph(i + 1)).join(', ')})`;
    if (op.returning === 'id') s += ' RETURNING id';
    else if (op.returning) s += ` RETURNING ${op.returning.map(([c]) => c).join(', ')}`;
    return s;
  }
  if (op.kind === 'update') {
    return `UPDATE public.${op.table} SET ${op.columns.map(([c], i) => `${c} = ${ph(i + 1)}`).join(', ')} WHERE id = ${ph(op.columns.length + 1)}`;
  }
  return `SELECT id FROM public.${op.table} WHERE lab = ${ph(1)} ORDER BY id`;
}

// ---------------------------------------------------------------------------
// Connection

const rawText = (s) => s;
const clientTypes = {
  // Raw text for every type; pg's own parser only for bytea (hex or escape output -> Buffer).
  getTypeParser: (oid, format) => (oid === 17 ? pg.types.getTypeParser(17, format) : rawText),
};

async function connect(url) {
  const client = new pg.Client({ connectionString: url, types: clientTypes });
  await client.connect();
  return client;
}

function makeQuery(opts, text, values, rowMode) {
  const q = { text, values, rowMode };
  if (opts.prepare) q.name = `pgveil_${crypto.createHash('sha1').update(text).digest('hex').slice(0, 16)}`;
  return q;
}

function checkOids(fields, want, what) {
  const have = fields.map((f) => f.dataTypeID);
  if (have.join(',') !== want.join(',')) {
    throw new ClientError(`${what} row description has type OIDs [${have}], expected [${want}]`);
  }
}

async function write(url, tag, opts) {
  const fx = loadFixture();
  checkTag(tag);
  const client = await connect(url);
  const ids = { lab_results: [], patients: [] };
  try {
    for (const op of writePlan(fx, tag)) {
      const sql = opSql(op);
      const params = op.columns.map(([, t], i) => bindValue(t, op.values[i]));
      if (op.kind === 'update') params.push(String(ids[op.table][op.target]));
      const res = await client.query(makeQuery(opts, sql, params, 'array'));
      if (op.kind === 'select_ids') {
        ids.lab_results = res.rows.map((r) => r[0]);
      } else if (op.kind === 'update') {
        if (res.rowCount !== 1) throw new ClientError(`UPDATE of ${op.table} changed ${res.rowCount} rows, expected 1`);
      } else if (op.returning === 'id') {
        ids.patients.push(res.rows[0][0]);
      } else if (op.returning) {
        checkOids(res.fields, op.returning.map(([, t]) => TYPE_OIDS[baseType(t)]), 'RETURNING');
        const sent = Object.fromEntries(op.columns.map(([c], i) => [c, op.values[i]]));
        const problems = [];
        op.returning.forEach(([name, logical], i) => {
          const got = res.rows[0][i];
          const want = expected(logical, sent[name]);
          const have = canonical(logical, got, `RETURNING ${op.table}.${name}`);
          if (want !== have) problems.push(`  ${op.table}.${name}: sent ${short(want)}, RETURNING gave ${short(have)}`);
          else if (baseType(logical) === 'json' && got !== null && got !== sent[name]) {
            problems.push(`  ${op.table}.${name}: json text not preserved: sent ${short(sent[name])}, got ${short(got)}`);
          }
        });
        if (problems.length) throw new ClientError(`INSERT ... RETURNING does not give back what was sent:\n${problems.join('\n')}`);
      }
    }
  } finally {
    await client.end();
  }
  process.stderr.write(`pg_client: wrote writer '${tag}' (prepare=${opts.prepare})\n`);
}

function dumpRow(row) {
  const sorted = {};
  for (const k of Object.keys(row).sort()) sorted[k] = row[k];
  return JSON.stringify(sorted);
}

function dumpDocument(doc) {
  const parts = TABLES.map((t) => `\n"${t}":[${doc[t].map((r) => `\n${dumpRow(r)}`).join(',')}\n]`);
  return `{${parts.join(',')}\n}\n`;
}

async function read(url, opts) {
  const fx = loadFixture();
  const client = await connect(url);
  const doc = {};
  try {
    for (const table of TABLES) {
      const res = await client.query(makeQuery(opts, `SELECT * FROM public.${table} ORDER BY id`, [], 'array'));
      const types = { ...EXTRA_COLUMNS[table], ...fx.columns[table] };
      const keep = [];
      res.fields.forEach((f, i) => {
        if (SKIPPED_COLUMNS[table].has(f.name)) return;
        if (!(f.name in types)) throw new ClientError(`${table}: unexpected column ${f.name} in SELECT *`);
        const want = TYPE_OIDS[baseType(types[f.name])];
        if (f.dataTypeID !== want) {
          throw new ClientError(`${table}.${f.name}: row description says type OID ${f.dataTypeID}, expected ${want} (${types[f.name]})`);
        }
        keep.push([i, f.name, types[f.name]]);
      });
      const missing = Object.keys(types).filter((c) => !keep.some(([, n]) => n === c));
      if (missing.length) throw new ClientError(`${table}: SELECT * lacks columns ${missing.join(', ')}`);
      doc[table] = res.rows.map((r) => Object.fromEntries(keep.map(([i, n, t]) => [n, canonical(t, r[i], `${table}.${n}`)])));
    }
  } finally {
    await client.end();
  }
  process.stdout.write(dumpDocument(doc));
}

// ---------------------------------------------------------------------------

const USAGE = `usage: pg_client.js write <DATABASE_URL> <writer_tag> [--prepare]
       pg_client.js read  <DATABASE_URL> [--prepare]`;

async function main(argv) {
  const opts = { prepare: false };
  const pos = [];
  for (const a of argv) {
    if (a === '--prepare') opts.prepare = true;
    else if (a === '-h' || a === '--help') { process.stdout.write(`${USAGE}\n`); return 0; }
    else if (a.startsWith('--')) throw new ClientError(`unknown option ${a}\n${USAGE}`);
    else pos.push(a);
  }
  if (pos[0] === 'write' && pos.length === 3) await write(pos[1], pos[2], opts);
  else if (pos[0] === 'read' && pos.length === 2) await read(pos[1], opts);
  else throw new ClientError(USAGE);
  return 0;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => { process.exitCode = code; },
    (e) => {
      const cmd = `pg_client ${process.argv[2] || ''}`;
      if (e instanceof ClientError) {
        process.stderr.write(`${cmd}: ${e.message}\n`);
        process.exitCode = 1;
      } else if (e && e.severity) { // an ErrorResponse from the server
        process.stderr.write(`${cmd}: database error: ${e.severity} ${e.code}: ${e.message}\n`);
        process.exitCode = 2;
      } else if (e && typeof e.code === 'string' && e.syscall) { // ECONNREFUSED and the like
        process.stderr.write(`${cmd}: connection error: ${e.message}\n`);
        process.exitCode = 2;
      } else {
        process.stderr.write(`${cmd}: ${e && e.stack ? e.stack : e}\n`);
        process.exitCode = 2;
      }
    },
  );
}

module.exports = { canonical, canonFloat, expected, jsonCanonical, roundNumeric };

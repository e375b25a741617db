#!/usr/bin/env node
// Calls lmrec.v1.GatewayService/Recommend once, prints the items and checks the answer; with --session,
// holds a conversation instead: each line read from stdin is one turn of the same session.
//
// Usage:
//   node recommend.js --target 127.0.0.1:50051 --user-id 1 -k 10 [--query "dark sci-fi thriller"]
//                     [--genre Comedy] [--diversity 0.3] [--scenario home] [--deadline-ms 5000]
//   node recommend.js --target 127.0.0.1:50051 --user-id 1 -k 5 --session [--session-id ID]
//
// Each item is printed with its reasons (why lmrec recommends it), and a broad answer with the
// refinements the gateway suggests (type one as the next turn).
//
// Exit status: 0 when the answer passes every check, 1 when the call fails or the answer is wrong,
// 2 on bad arguments. The .proto files are read at run time from ../../protos, so this client always
// speaks the contract checked into the repository rather than a generated copy that can drift.
'use strict';

const fs = require('fs');
const path = require('path');
const readline = require('readline');
const crypto = require('crypto');
const { parseArgs } = require('util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'protos');
const GATEWAY_PROTO = 'lmrec/v1/gateway_service.proto';

const USAGE = `usage: node recommend.js --target HOST:PORT --user-id ID -k K [--query TEXT] [--genre G]
                         [--diversity 0..1] [--scenario NAME] [--deadline-ms MS]
       node recommend.js --target HOST:PORT --user-id ID -k K --session [--session-id ID]
                         (one turn per line of stdin)`;

function usageError(message) {
  console.error(`${message}\n${USAGE}`);
  process.exit(2);
}

function parseCommandLine(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        target: { type: 'string', default: '127.0.0.1:50051' },
        'user-id': { type: 'string' },
        k: { type: 'string', short: 'k', default: '10' },
        query: { type: 'string', default: '' },
        genre: { type: 'string', multiple: true, default: [] },
        diversity: { type: 'string' },
        scenario: { type: 'string', default: '' },
        'deadline-ms': { type: 'string', default: '5000' },
        session: { type: 'boolean', default: false },
        'session-id': { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (err) {
    usageError(err.message);
  }
  const v = parsed.values;
  if (v.help) {
    console.log(USAGE);
    process.exit(0);
  }
  if (!v['user-id']) usageError('--user-id is required');
  const k = Number(v.k);
  if (!Number.isInteger(k) || k < 1 || k > 1000) usageError(`-k must be an integer in 1..1000, got ${v.k}`);
  const deadlineMs = Number(v['deadline-ms']);
  if (!Number.isFinite(deadlineMs) || deadlineMs <= 0) usageError(`--deadline-ms must be positive, got ${v['deadline-ms']}`);
  let diversity;
  if (v.diversity !== undefined) {
    diversity = Number(v.diversity);
    if (!Number.isFinite(diversity) || diversity < 0 || diversity > 1) usageError(`--diversity must be in 0..1, got ${v.diversity}`);
  }
  if (v['session-id'] !== undefined && !v.session) usageError('--session-id needs --session');
  if (v.session && v.query) usageError('--session reads its turns from stdin, not --query');
  const sessionId = v.session ? (v['session-id'] || crypto.randomUUID()) : '';
  return { target: v.target, userId: v['user-id'], k, query: v.query, genres: v.genre, diversity,
    scenario: v.scenario, deadlineMs, sessionId };
}

function loadGatewayService() {
  // includeDirs covers lmrec/v1/*.proto; google/protobuf/timestamp.proto comes from the well-known
  // types bundled with protobufjs, which proto-loader falls back to.
  const definition = protoLoader.loadSync(GATEWAY_PROTO, {
    includeDirs: [PROTO_ROOT],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).lmrec.v1.GatewayService;
}

/** Returns the list of problems with a RecommendResponse; empty when it is a valid answer.
 * Scores descend only in a list ranked purely by score (greedy policy, no diversity re-ranking).
 * A session turn may hold fewer than k items: the session's constraints may leave fewer. */
function checkResponse(response, k, rankedByScore = true, inSession = false) {
  const problems = [];
  const items = response.items || [];
  if (inSession) {
    if (items.length > k) problems.push(`expected at most ${k} items, got ${items.length}`);
    if (!(response.session_turn >= 1)) problems.push(`session_turn is ${response.session_turn}, expected >= 1`);
  } else if (response.degraded) {
    // A fallback may legitimately return fewer items, but an empty page is still a failure.
    if (items.length < 1 || items.length > k) problems.push(`degraded answer has ${items.length} items, expected 1..${k}`);
  } else if (items.length !== k) {
    problems.push(`expected exactly ${k} items, got ${items.length}`);
  }
  const seen = new Set();
  items.forEach((item, i) => {
    if (seen.has(item.item_id)) problems.push(`item ${i}: duplicate item_id ${item.item_id}`);
    seen.add(item.item_id);
    if (!item.item_id) problems.push(`item ${i}: empty item_id`);
    if (!item.title || !item.title.trim()) problems.push(`item ${i} (${item.item_id}): empty title`);
    if (!Number.isFinite(item.score)) problems.push(`item ${i} (${item.item_id}): score ${item.score} is not finite`);
    if (!item.reasons || item.reasons.length === 0) problems.push(`item ${i} (${item.item_id}): no reason given`);
    (item.reasons || []).forEach((reason, j) => {
      if (!reason.text) problems.push(`item ${i} (${item.item_id}): reason ${j} has no text`);
    });
    if (rankedByScore && response.policy === 'greedy' && i > 0 && item.score > items[i - 1].score) {
      problems.push(`item ${i} (${item.item_id}): score ${item.score} is above the previous ${items[i - 1].score}`);
    }
  });
  if (!response.model_version) problems.push('model_version is empty');
  return problems;
}

function buildRequest(opts, query) {
  const request = {
    user_id: opts.userId,
    k: opts.k,
    query,
    filters: opts.genres.length ? [{ key: 'genre', values: opts.genres }] : [],
    scenario: opts.scenario,
    session_id: opts.sessionId,
  };
  if (opts.diversity !== undefined) request.diversity = opts.diversity;
  return request;
}

/** The bearer token every call carries: LMREC_TOKEN, as all lmrec clients read it. */
function authMetadata() {
  const metadata = new grpc.Metadata();
  if (process.env.LMREC_TOKEN) metadata.set('authorization', `Bearer ${process.env.LMREC_TOKEN}`);
  return metadata;
}

/** TLS when LMREC_TLS_CA names the CA of the gateway's certificate; plaintext otherwise. */
function channelCredentials() {
  const ca = process.env.LMREC_TLS_CA;
  return ca ? grpc.credentials.createSsl(fs.readFileSync(ca)) : grpc.credentials.createInsecure();
}

/** One Recommend call; resolves to { response, elapsedMs } or rejects with the gRPC error. */
function recommend(client, request, deadlineMs) {
  const deadline = new Date(Date.now() + deadlineMs);
  const started = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    client.Recommend(request, authMetadata(), { deadline }, (err, response) => {
      if (err) reject(err);
      else resolve({ response, elapsedMs: Number(process.hrtime.bigint() - started) / 1e6 });
    });
  });
}

function printAnswer(opts, response, elapsedMs) {
  const label = response.degraded ? ` DEGRADED (${response.degraded_reason || 'no reason given'})` : '';
  const who = opts.sessionId ? `turn ${response.session_turn} of session ${opts.sessionId}` : `user ${opts.userId}`;
  console.log(`${who}: ${response.items.length} items in ${elapsedMs.toFixed(1)} ms, ` +
    `model ${response.model_version || '?'}, source ${response.source || '?'}, ` +
    `scenario ${response.scenario || '?'}, policy ${response.policy || '?'}${label}`);
  response.items.forEach((item, i) => {
    console.log(`${String(i + 1).padStart(3)}. ${item.item_id.padEnd(8)} ${item.score.toFixed(4).padStart(9)}  ${item.title}`);
    (item.reasons || []).forEach((reason) => console.log(`${' '.repeat(15)}- ${reason.text}`));
  });
  if ((response.refinements || []).length) {
    console.log(`     refine: ${response.refinements.map((r) => r.text).join(' | ')}`);
  }
}

function describeError(err) {
  const codeName = Object.keys(grpc.status).find((name) => grpc.status[name] === err.code) || err.code;
  return `Recommend failed: ${codeName}: ${err.details || err.message}`;
}

/** Sends one request, prints and checks the answer; returns true when it passed. */
async function turn(client, opts, query) {
  let answer;
  try {
    answer = await recommend(client, buildRequest(opts, query), opts.deadlineMs);
  } catch (err) {
    console.error(describeError(err));
    return false;
  }
  printAnswer(opts, answer.response, answer.elapsedMs);
  const problems = checkResponse(answer.response, opts.k, !opts.diversity, Boolean(opts.sessionId));
  if (problems.length) {
    console.error(`answer failed ${problems.length} check(s):\n  - ${problems.join('\n  - ')}`);
    return false;
  }
  return true;
}

/** --session: every line of stdin is a turn; stops at end of input. Exit 1 if any turn failed. */
async function conversation(client, opts) {
  const interactive = Boolean(process.stdin.isTTY);
  const lines = readline.createInterface({ input: process.stdin, terminal: interactive });
  if (interactive) process.stdout.write('> ');
  let failed = 0;
  let turns = 0;
  for await (const line of lines) {
    if (!interactive) console.log(`> ${line}`);
    turns += 1;
    if (!(await turn(client, opts, line.trim()))) failed += 1;
    if (interactive) process.stdout.write('> ');
  }
  if (failed) {
    console.error(`${failed} of ${turns} turns failed`);
    return false;
  }
  console.log(`OK: ${turns} turns passed all checks`);
  return true;
}

async function main() {
  const opts = parseCommandLine(process.argv.slice(2));
  const GatewayService = loadGatewayService();
  const client = new GatewayService(opts.target, channelCredentials());
  try {
    const ok = opts.sessionId ? await conversation(client, opts) : await turn(client, opts, opts.query);
    if (!ok) process.exitCode = 1;
    else if (!opts.sessionId) console.log('OK: answer passed all checks');
  } finally {
    client.close();
  }
}

if (require.main === module) {
  main();
}

module.exports = { checkResponse, loadGatewayService };

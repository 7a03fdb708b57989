// Mastra 1.71's own stores on a database that composite-store shares (tests/test_interop_mastra.py).
//
//     node tests/interop/mastra.mjs <database URL>  < request.json  > view.json
//
// The URL is `file:/path/to.db` (LibSQLStore: libsql reads SQLite files) or `postgresql://…`
// (PostgresStore).  The request is `{"write": {...}, "read": {...}}`: first every record under
// "write" is written through the framework's store APIs (in the order below: threads, messages,
// thread moves, copies, scores, spans, agents and their versions, favourites, workflow
// snapshots), then every record named under "read" is read back through them and printed on
// stdout as one JSON object (the "view"; dates as ISO text), with "written": {"copies": {<new
// thread id>: <source message id → copy's id>}}.  Both parts may be partial.
// The APIs used are those of the packages' dist/**/*.d.ts (see tests/interop/package.json).
import { LibSQLStore } from '@mastra/libsql';
import { PostgresStore } from '@mastra/pg';

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
}

function openStore(url) {
  if (url.startsWith('file:')) return new LibSQLStore({ id: 'interop', url });
  return new PostgresStore({ id: 'interop', connectionString: url });
}

// Request JSON carries timestamps as ISO text; the framework's write APIs take Date objects.
function withDates(record, keys) {
  const copy = { ...record };
  for (const key of keys) {
    if (typeof copy[key] === 'string') copy[key] = new Date(copy[key]);
  }
  return copy;
}

function copyInput(copy) {
  const filter = copy.options?.messageFilter;
  if (!filter) return copy;
  return {
    ...copy,
    options: { ...copy.options, messageFilter: withDates(filter, ['startDate', 'endDate']) },
  };
}

async function write(stores, request) {
  const { memory, scores, observability, agents, favorites, workflows } = stores;
  const result = {};
  for (const thread of request.threads ?? []) {
    await memory.saveThread({ thread: withDates(thread, ['createdAt', 'updatedAt']) });
  }
  if (request.messages?.length) {
    await memory.saveMessages({ messages: request.messages.map(message => withDates(message, ['createdAt'])) });
  }
  for (const move of request.moves ?? []) {
    await memory.updateThreadResourceId(move);
  }
  for (const copy of request.copies ?? []) {
    const { thread, messageIdMap } = await memory.copyThread(copyInput(copy));
    (result.copies ??= {})[thread.id] = messageIdMap;
  }
  for (const score of request.scores ?? []) {
    await scores.saveScore(score);
  }
  for (const span of request.spans ?? []) {
    await observability.createSpan({ span: withDates(span, ['startedAt', 'endedAt']) });
  }
  for (const agent of request.agents ?? []) {
    await agents.create({ agent });
  }
  for (const version of request.versions ?? []) {
    await agents.createVersion(version);
  }
  for (const favorite of request.favorites ?? []) {
    await favorites.favorite(favorite);
  }
  for (const run of request.workflowRuns ?? []) {
    await workflows.persistWorkflowSnapshot(run);
  }
  return result;
}

async function byId(ids, read) {
  const found = {};
  for (const id of ids ?? []) found[id] = await read(id);
  return found;
}

async function read(stores, request) {
  const { memory, scores, observability, agents, favorites, workflows } = stores;
  const view = {};
  view.threads = await byId(request.threads, threadId => memory.getThreadById({ threadId }));
  view.messages = await byId(request.threads, async threadId =>
    (await memory.listMessages({ threadId, perPage: false })).messages);
  view.threadsByResource = await byId(request.resources, async resourceId =>
    (await memory.listThreads({ filter: { resourceId }, perPage: false })).threads.map(thread => thread.id));
  view.scores = await byId(request.scores, id => scores.getScoreById({ id }));
  view.scoreIdsByEntityType = await byId(request.scoreEntityTypes, async entityType =>
    (await scores.listScoresByEntityId({ entityId: request.scoreEntityId, entityType,
                                         pagination: { page: 0, perPage: 100 } })).scores.map(score => score.id));
  view.traces = await byId(request.traces, traceId => observability.getTrace({ traceId }));
  view.traceStructures = await byId(request.traces, traceId => observability.getTraceLight({ traceId }));
  view.traceIdsByChildError = {};
  for (const hasChildError of [true, false]) {
    const { spans } = await observability.listTraces({ filters: { hasChildError }, pagination: { perPage: 100 } });
    view.traceIdsByChildError[hasChildError] = spans.map(span => span.traceId);
  }
  view.agents = await byId(request.agents, id => agents.getById(id));
  const versionIds = [];
  for (const agentId of request.agents ?? []) {
    const { versions } = await agents.listVersions({ agentId, perPage: false });
    versionIds.push(...versions.map(version => version.id).sort());
  }
  view.versions = await agents.getVersions(versionIds);
  view.favoritedIds = await byId(request.favoriteUsers, userId =>
    favorites.listFavoritedIds({ userId, entityType: 'agent' }));
  view.agentsPinned = await byId(request.favoriteUsers, async pinFavoritedFor =>
    (await agents.list({ pinFavoritedFor, perPage: false, orderBy: { field: 'createdAt', direction: 'ASC' } }))
      .agents.map(agent => agent.id));
  view.agentsFavoritedOnly = await byId(request.favoriteUsers, async pinFavoritedFor => {
    const page = await agents.list({ pinFavoritedFor, favoritedOnly: true, perPage: false });
    return { ids: page.agents.map(agent => agent.id), total: page.total };
  });
  view.workflowRuns = await byId(request.workflowRuns, runId => workflows.getWorkflowRunById({ runId }));
  view.workflowRunIdsByStatus = await byId(request.workflowStatuses, async status =>
    (await workflows.listWorkflowRuns({ status })).runs.map(run => run.runId));
  return view;
}

async function main() {
  const url = process.argv[2];
  if (!url) throw new Error('usage: node mastra.mjs <database URL> < request.json');
  const request = await readStdin();
  const store = openStore(url);
  try {
    await store.init();
    const stores = {};
    for (const key of ['memory', 'scores', 'observability', 'agents', 'favorites', 'workflows']) {
      stores[key] = await store.getStore(key);
    }
    const written = await write(stores, request.write ?? {});
    const view = await read(stores, request.read ?? {});
    process.stdout.write(JSON.stringify({ written, ...view }));
  } finally {
    await store.close();
  }
}

await main();

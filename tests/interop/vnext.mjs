// The framework's vNext observability store on PostgreSQL (tests/test_observability_vnext_interop.py).
//
//     node tests/interop/vnext.mjs <postgresql:// URL> <schema>  < request.json  > view.json
//
// `ObservabilityStoragePostgresVNext` (@mastra/pg 1.27.1, the domain `PostgresStoreVNext` uses for
// observability) on the given schema.  The request is `{"init": bool, "spans": [...], "read": {"traces":
// [traceId, ...], "roots": [traceId, ...]}}`: with "init" the store creates its tables first (its own DDL,
// partitions and indexes), then writes every span with createSpan (in order), then prints one JSON object:
// {"traces": {<id>: getTrace(...)}, "roots": {<id>: getRootSpan(...).span}, "listed": listTraces().spans}
// (dates as ISO text).
import { ObservabilityStoragePostgresVNext } from '@mastra/pg';

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
}

// Request JSON carries timestamps as ISO text; the framework's write APIs take Date objects.
function withDates(span) {
  const copy = { ...span };
  for (const key of ['startedAt', 'endedAt']) {
    if (typeof copy[key] === 'string') copy[key] = new Date(copy[key]);
  }
  return copy;
}

const [url, schemaName] = process.argv.slice(2);
const request = await readStdin();
const store = new ObservabilityStoragePostgresVNext({ connectionString: url, schemaName });
try {
  if (request.init) await store.init();
  for (const span of request.spans ?? []) {
    await store.createSpan({ span: withDates(span) });
  }
  const view = { traces: {}, roots: {} };
  for (const traceId of request.read?.traces ?? []) {
    view.traces[traceId] = await store.getTrace({ traceId });
  }
  for (const traceId of request.read?.roots ?? []) {
    view.roots[traceId] = (await store.getRootSpan({ traceId }))?.span ?? null;
  }
  view.listed = (await store.listTraces({ pagination: { page: 0, perPage: 100 } })).spans;
  process.stdout.write(JSON.stringify(view));
} finally {
  await store.close?.();
}

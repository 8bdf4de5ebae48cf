// Uses the TypeScript client (openapi-typescript types + openapi-fetch) generated from
// Flowdeck's live document, as a CI job would: creates a pipeline, triggers it twice with
// one Idempotency-Key and gets one run, reads the run, filters runs, and reads a refusal
// (422) as a typed error. Type-checked with tsc (strict) against the generated types, so a
// document change that breaks this use fails the build.
//
// scripts/clients-test.sh writes the generated types next to this file (flowdeck.d.ts),
// compiles and runs it with FLOWDECK_URL and FLOWDECK_API_KEY set.
import createClient from "openapi-fetch";
import type { components, paths } from "./flowdeck.js";

type ErrorBody = components["schemas"]["ErrorBody"];
declare const process: { env: Record<string, string | undefined> };

function check(condition: boolean, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

const client = createClient<paths>({
  baseUrl: process.env.FLOWDECK_URL,
  headers: { Authorization: `Bearer ${process.env.FLOWDECK_API_KEY}` },
});
const suffix = Math.random().toString(16).slice(2, 10);

const made = await client.POST("/api/pipelines/", {
  body: { name: `TypeScript client ${suffix}`, tags: ["clients"], default_parameters: { rows: 10, label: "ts" } },
});
check(made.response.status === 201 && made.data !== undefined, `create: ${made.response.status}`);
const pipeline = made.data;

const key = `typescript-${suffix}`;
const trigger = () =>
  client.POST("/api/pipelines/{id}/runs", {
    params: { path: { id: pipeline.id }, header: { "Idempotency-Key": key } },
    body: { parameters: { rows: 20, nested: { a: [1, "b"] } } },
  });
const first = await trigger();
const again = await trigger();
check(first.data !== undefined && again.data !== undefined, "a trigger was refused");
check(first.data.id === again.data.id, "one Idempotency-Key made two runs");

const read = await client.GET("/api/runs/{id}", { params: { path: { id: first.data.id } } });
check(read.data !== undefined, `read: ${read.response.status}`);
const run = read.data;
check(run.status === "pending", `status ${run.status}`);
const parameters = run.parameters as Record<string, unknown>;
check(parameters["rows"] === 20 && parameters["label"] === "ts" && JSON.stringify(parameters["nested"]) === '{"a":[1,"b"]}',
  `parameters ${JSON.stringify(parameters)}`);
check(run.stages.map((s) => s.name).join(",") === "Data Generation,Data Ingestion,Spark Processing,DBT Transformation,Data Export",
  `stages ${run.stages.map((s) => s.name)}`);

const listed = await client.POST("/api/runs/filter", { body: { sort: "CREATED_ASC", limit: 50 } });
check(listed.data !== undefined && listed.data.some((r) => r.id === run.id), "the run is not filtered");

// The same key with another body: 422, read as the typed error body.
const refused = await client.POST("/api/pipelines/{id}/runs", {
  params: { path: { id: pipeline.id }, header: { "Idempotency-Key": key } },
  body: { parameters: { rows: 21 } },
});
check(refused.response.status === 422 && refused.error !== undefined, `refused: ${refused.response.status}`);
const error: ErrorBody = refused.error;
check(error.code === "invalid" && error.field === "Idempotency-Key", `error ${JSON.stringify(error)}`);
console.log(`typescript client: pipeline ${pipeline.id}, run ${run.id} once for two triggers, ` +
  `${listed.data.length} runs filtered, 422 read as ErrorBody(field=${error.field})`);

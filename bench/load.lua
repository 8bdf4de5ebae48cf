-- Flowdeck's load scenarios for wrk (https://github.com/wg/wrk), one per BENCH_MODE:
--   list     GET /api/pipelines/ (first page)
--   filter   POST /api/runs/filter: failed runs, newest 50
--   status   POST /api/status-update/: a stage report with a unique event id, spread
--            over BENCH_RUNS runs starting at BENCH_FIRST_RUN (each a durable commit)
--   seed     POST /api/status-update/ with the seed's payload (`pipeline_id`, no `run_id`),
--            spread over BENCH_PIPELINES pipelines (their latest runs)
--   trigger  POST /api/pipelines/{id}/runs over BENCH_PIPELINES pipelines
--   pipeline GET /api/pipelines/{id} over BENCH_PIPELINES pipelines
--   run      GET /api/runs/{id} over BENCH_RUNS runs starting at BENCH_FIRST_RUN
--   health   GET /api/health (the machine's floor: no database, no credential check)
-- BENCH_ENCODING, if set, is sent as Accept-Encoding (e.g. `br`, `gzip`).
-- Prints one line `BENCH {json}` with requests, rate, latency percentiles and errors.
local mode = os.getenv("BENCH_MODE") or "list"
local key = os.getenv("BENCH_KEY") or ""
local runs = tonumber(os.getenv("BENCH_RUNS") or "1")
local first_run = tonumber(os.getenv("BENCH_FIRST_RUN") or "1")
local pipelines = tonumber(os.getenv("BENCH_PIPELINES") or "1")
-- Makes this measurement's event ids differ from every other's (repeats are not recorded).
local tag = os.getenv("BENCH_TAG") or "0"
local stages = {"Data Generation", "Data Ingestion", "Spark Processing", "DBT Transformation", "Data Export"}
local headers = {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}
local encoding = os.getenv("BENCH_ENCODING")
if encoding and encoding ~= "" then headers["Accept-Encoding"] = encoding end
local filter_body = '{"runs":{"status":{"any_":["failed"]}},"limit":50}'

local next_thread = 0
function setup(thread)
  next_thread = next_thread + 1
  thread:set("tid", next_thread)
end

local counter = 0
function request()
  counter = counter + 1
  if mode == "list" then
    return wrk.format("GET", "/api/pipelines/", headers)
  elseif mode == "filter" then
    return wrk.format("POST", "/api/runs/filter", headers, filter_body)
  elseif mode == "status" then
    local run = first_run + (counter * 7919 + tid * 104729) % runs
    local body = string.format(
      '{"run_id":%d,"stage_name":"%s","status":"running","event_id":"bench-%s-%d-%d"}',
      run, stages[1 + counter % 5], tag, tid, counter)
    return wrk.format("POST", "/api/status-update/", headers, body)
  elseif mode == "seed" then
    local pipeline = 1 + (counter * 7919 + tid * 104729) % pipelines
    local body = string.format(
      '{"pipeline_id":%d,"stage_name":"%s","status":"running","event_id":"bench-%s-%d-%d"}',
      pipeline, stages[1 + counter % 5], tag, tid, counter)
    return wrk.format("POST", "/api/status-update/", headers, body)
  elseif mode == "pipeline" then
    return wrk.format("GET", "/api/pipelines/" .. (1 + (counter * 31 + tid * 7) % pipelines), headers)
  elseif mode == "run" then
    return wrk.format("GET", "/api/runs/" .. (first_run + (counter * 31 + tid * 7) % runs), headers)
  elseif mode == "health" then
    return wrk.format("GET", "/api/health")
  elseif mode == "trigger" then
    local pipeline = 1 + (counter * 31 + tid * 7) % pipelines
    return wrk.format("POST", "/api/pipelines/" .. pipeline .. "/runs", headers, "{}")
  end
  error("unknown BENCH_MODE " .. mode)
end

function done(summary, latency, requests)
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    'BENCH {"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"non_2xx":%d,"socket_errors":%d}\n',
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    e.status, e.connect + e.read + e.write + e.timeout))
end

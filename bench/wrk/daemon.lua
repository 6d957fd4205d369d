-- wrk script for bench/run_daemon.sh. Environment:
--   BENCH_MODE   "sample" (GET one sample) or "query" (POST a TQL query)
--   BENCH_PATH   sample mode: path up to the index, e.g. /datasets/bench/tensors/images/samples/
--   BENCH_SUFFIX sample mode: appended after the index, e.g. ?format=raw
--   BENCH_ROWS   sample mode: rows in the tensor; indices are spread over all of them
--   BENCH_QUERY_PATH, BENCH_QUERIES  query mode: the route, and queries separated by "|"
--   BENCH_TOKEN  bearer token
--   BENCH_OUT    file that receives one JSON object with the figures
local mode = os.getenv("BENCH_MODE") or "sample"
local path = os.getenv("BENCH_PATH") or "/"
local suffix = os.getenv("BENCH_SUFFIX") or ""
local rows = tonumber(os.getenv("BENCH_ROWS") or "1")
local token = os.getenv("BENCH_TOKEN")
local queries = {}
for q in string.gmatch(os.getenv("BENCH_QUERIES") or "", "[^|]+") do
  table.insert(queries, q)
end
local query_path = os.getenv("BENCH_QUERY_PATH") or "/"

local auth = token and ("Bearer " .. token) or nil
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("thread_id", thread_id)
  thread_id = thread_id + 1
  table.insert(threads, thread)
end

function init(args)
  -- Each thread starts at a different place in the spread.
  counter = thread_id * 7919
  if auth then
    wrk.headers["Authorization"] = auth
  end
end

-- A stride coprime to most row counts walks every index before repeating, in an
-- order that is not sequential (so no two neighbouring requests share a chunk by luck).
local stride = 7919

function request()
  counter = counter + 1
  if mode == "query" then
    local q = queries[(counter % #queries) + 1]
    local body = '{"query": "' .. q .. '", "limit": 10}'
    -- An explicit header table replaces wrk.headers, so the token goes in it too.
    return wrk.format("POST", query_path,
      {["Content-Type"] = "application/json", ["Authorization"] = auth}, body)
  end
  local index = (counter * stride) % rows
  return wrk.format("GET", path .. index .. suffix)
end

function done(summary, latency, requests)
  local out = os.getenv("BENCH_OUT")
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.status + summary.errors.timeout
  local s = string.format(
    '{"requests": %d, "duration_s": %.6f, "rps": %.1f, "p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f, "errors": %d, "non_200": %d}',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, errors, summary.errors.status)
  if out then
    local f = io.open(out, "w")
    f:write(s .. "\n")
    f:close()
  else
    io.write(s .. "\n")
  end
end

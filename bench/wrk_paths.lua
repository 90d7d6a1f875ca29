-- wrk script for bench/amp_list.py: cycles through a file of request paths (one per line).
--
-- Environment (read in every wrk Lua state):
--   WRK_PATHS   file of paths, e.g. /v1/<token>/list/picks.json (required)
--   WRK_SENDER  AMP-Email-Sender header value (default news@example.com)
--   WRK_CHECK   "1": count non-200 responses and X-Opentime-Fallback headers (costs wrk CPU)
--   WRK_LIMIT   N > 0: stop after N responses (each of the first N paths requested once) and
--               print "opentime-bench: exhausted" so the caller can end wrk early (SIGINT)
--   WRK_DELAY_MS N > 0: each connection waits N ms before each request (a paced load, as bench/soak.py
--               uses: about connections * 1000 / (N + latency) requests/s; latency excludes the wait)
--
-- done() prints one line "opentime-bench-json {...}" with exact latency percentiles (microseconds),
-- counters, and (with WRK_LIMIT) the request rate measured between the first request and the
-- N-th response with a monotonic clock, since wrk's own req/s divides by the full -d duration.

local has_ffi, ffi = pcall(require, "ffi")
if has_ffi then
  ffi.cdef([[
    typedef struct { long tv_sec; long tv_nsec; } opentime_timespec;
    int clock_gettime(int clk_id, opentime_timespec *tp);
  ]])
end

local function now_us()
  if not has_ffi then
    return 0
  end
  local ts = ffi.new("opentime_timespec")
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end

local check = os.getenv("WRK_CHECK") == "1"
local limit = tonumber(os.getenv("WRK_LIMIT") or "0") or 0
local sender = os.getenv("WRK_SENDER") or "news@example.com"
local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "0") or 0

-- Per-thread state (each wrk thread has its own Lua state); read from done() with thread:get().
requests_built = {}
count = 0
index = 0
answered = 0
non200 = 0
fallbacks = 0
wrapped = 0
t_first = 0
t_last = 0
exhausted = 0

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local file = os.getenv("WRK_PATHS")
  if not file then
    error("WRK_PATHS is not set")
  end
  local headers = { ["AMP-Email-Sender"] = sender }
  for line in io.lines(file) do
    if #line > 0 then
      count = count + 1
      requests_built[count] = wrk.format("GET", line, headers)
    end
  end
  if count == 0 then
    error("no paths in " .. file)
  end
end

function request()
  if t_first == 0 then
    t_first = now_us()
  end
  index = index + 1
  if index > count then
    index = 1
    wrapped = wrapped + 1
  end
  return requests_built[index]
end

local function on_response(status, headers, body)
  answered = answered + 1
  if status ~= 200 then
    non200 = non200 + 1
  end
  if headers["x-opentime-fallback"] or headers["X-Opentime-Fallback"] then
    fallbacks = fallbacks + 1
  end
  if limit > 0 and answered == limit then
    t_last = now_us()
    exhausted = 1
    io.write("opentime-bench: exhausted\n")
    io.flush()
    wrk.thread:stop()
  end
end

if check or limit > 0 then
  response = on_response
end

if delay_ms > 0 then
  function delay()
    return delay_ms
  end
end

function done(summary, latency, requests)
  local totals = { answered = 0, non200 = 0, fallbacks = 0, wrapped = 0, exhausted = 0 }
  local first, last = 0, 0
  for _, thread in ipairs(threads) do
    for name, _ in pairs(totals) do
      totals[name] = totals[name] + (thread:get(name) or 0)
    end
    local f, l = thread:get("t_first") or 0, thread:get("t_last") or 0
    if f > 0 and (first == 0 or f < first) then
      first = f
    end
    if l > last then
      last = l
    end
  end
  local e = summary.errors
  local parts = {
    string.format('"requests":%d', summary.requests),
    string.format('"duration_us":%d', summary.duration),
    string.format('"bytes":%d', summary.bytes),
    string.format('"err_connect":%d', e.connect),
    string.format('"err_read":%d', e.read),
    string.format('"err_write":%d', e.write),
    string.format('"err_status":%d', e.status),
    string.format('"err_timeout":%d', e.timeout),
    string.format('"p50_us":%d', latency:percentile(50)),
    string.format('"p90_us":%d', latency:percentile(90)),
    string.format('"p99_us":%d', latency:percentile(99)),
    string.format('"p999_us":%d', latency:percentile(99.9)),
    string.format('"max_us":%d', latency.max),
    string.format('"mean_us":%.1f', latency.mean),
    string.format('"checked":%s', tostring(check or limit > 0)),
    string.format('"limit":%d', limit),
    string.format('"limit_elapsed_us":%d', (last > first and first > 0) and (last - first) or 0),
  }
  for name, value in pairs(totals) do
    table.insert(parts, string.format('"%s":%d', name, value))
  end
  io.write("opentime-bench-json {" .. table.concat(parts, ",") .. "}\n")
end

-- wrk script: POST single-text /v1/classify requests cycling through real queries, and print
-- the summary as one JSON line (latency percentiles in microseconds).
local texts = {}
local path = os.getenv("BENCH_TEXTS") or "benchmarks/texts.txt"
for line in io.lines(path) do
  if #line > 0 then texts[#texts + 1] = line end
end
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local target = os.getenv("BENCH_PATH") or "/v1/classify"
-- "classify": {"texts": [text]}; "chat": {"text": text} (a new session per request)
local shape = os.getenv("BENCH_BODY") or "classify"

local function escape(s)
  return (s:gsub('\\', '\\\\'):gsub('"', '\\"'))
end

request = function()
  i = i + 1
  local text = texts[(i % #texts) + 1]
  if shape == "chat" then
    return wrk.format(nil, target, nil, '{"text": "' .. escape(text) .. '"}')
  end
  return wrk.format(nil, target, nil, '{"texts": ["' .. escape(text) .. '"]}')
end

done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout + summary.errors.status
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": %d, "non2xx": %d, ' ..
    '"p50_us": %d, "p95_us": %d, "p99_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, errors, summary.errors.status,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.mean))
end

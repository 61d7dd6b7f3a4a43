-- wrk script for the dss-event-server bench: POSTs one scenario's body, with a unique id per event
-- where the body has "__SEQ__" marks, cycling through routing keys where asked.
--
-- bench/load.mjs writes one script per scenario: these settings, then this file.
--   BODY_FILE     the request body
--   CONTENT_TYPE  its content type; GZIP: true adds content-encoding: gzip
--   PATH_PREFIX   the path without the routing key's number, e.g. "/events/generic/rk-"
--   ROUTING_KEYS  how many routing keys requests cycle through (1: always <PATH_PREFIX>0)
--   UNIQUE        true: each "__SEQ__" becomes an id, ID_BASE + thread * 1e9 + request * EVENTS + j
--   EVENTS        events per request
-- The id base is wrk's first script argument, so each run of one script sends new ids:
--   wrk -t1 -c50 -d10s -s a.lua http://127.0.0.1:8080 -- 10000000000
-- At the end it prints one line, "WRK_RESULT {json}", that bench/load.mjs reads.

local threads = {}
local thread_count = 0

function setup(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

function init(args)
  id_base = tonumber(args[1] or "0")
  local f = assert(io.open(BODY_FILE, "rb"))
  body = f:read("*a")
  f:close()
  headers = { ["Content-Type"] = CONTENT_TYPE }
  if GZIP then headers["Content-Encoding"] = "gzip" end
  sent = 0
  if UNIQUE then
    pieces = {}
    local from = 1
    while true do
      local s, e = string.find(body, "__SEQ__", from, true)
      if not s then break end
      pieces[#pieces + 1] = string.sub(body, from, s - 1)
      from = e + 1
    end
    pieces[#pieces + 1] = string.sub(body, from)
    parts = {}
  elseif ROUTING_KEYS <= 1 then
    static = wrk.format("POST", PATH_PREFIX .. "0", headers, body)
  end
end

function request()
  local n = sent
  sent = n + 1
  if static then return static end
  local b = body
  if pieces then
    local first = id_base + tid * 1e9 + n * EVENTS
    local k = 0
    for j = 1, #pieces - 1 do
      parts[k + 1] = pieces[j]
      parts[k + 2] = string.format("%.0f", first + j - 1)
      k = k + 2
    end
    parts[k + 1] = pieces[#pieces]
    b = table.concat(parts, "", 1, k + 1)
  end
  local rk = 0
  if ROUTING_KEYS > 1 then rk = (n + tid * 7919) % ROUTING_KEYS end
  return wrk.format("POST", PATH_PREFIX .. rk, headers, b)
end

function done(summary, latency, requests)
  local per = {}
  for i, t in ipairs(threads) do per[i] = string.format("%.0f", t:get("sent")) end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%.0f,"durationUs":%.0f,"errors":{"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f},' ..
    '"latencyUs":{"p50":%.0f,"p99":%.0f,"max":%.0f,"mean":%.1f},"sentPerThread":[%s]}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, latency.mean, table.concat(per, ",")))
end

-- wrk script of bench/call_latency.py and bench/soak.py: POSTs the legacy sample request
-- (dialer mode, names with spaces), each with a destination and an extension of its own,
-- so that no duplicate rule or per-destination limit refuses one; counts the replies
-- that are a 200 saying "status": "true"; prints every figure as one JSON line.
--   wrk -t T -c C -d 5s -s call_load.lua URL -- OFFSET API_KEY close|keep-alive
-- OFFSET makes the numbers of one run differ from every other run's.

local threads = {}
local counter = 1

function setup(thread)
   thread:set("id", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

-- US numbers on six area codes, exchanges 200-999: 48 million different destinations.
local areas = {"212", "213", "312", "415", "617", "718"}

function init(args)
   offset = tonumber(args[1] or "0")
   key = args[2] or ""
   connection = args[3] or "close"
   sent, ok, bad = 0, 0, 0
end

function request()
   sent = sent + 1
   local n = offset + sent * 16 + id
   local area = areas[(n % 6) + 1]
   local exchange = 200 + math.floor(n / 6) % 800
   local line = math.floor(n / 4800) % 10000
   local body = string.format('{" extension " : "%d", " destination ": "1%s%03d%04d", '
      .. '" voice_pitch ": "1", " call_in_out ": "true"}', 2001 + n % 100, area, exchange, line)
   local headers = {["api-key"] = key, ["Content-Type"] = "application/json",
                    ["Connection"] = connection}
   return wrk.format("POST", nil, headers, body)
end

function response(status, headers, body)
   if status == 200 and (string.find(body, '"status": "true"', 1, true)
                         or string.find(body, '"status":"true"', 1, true)) then
      ok = ok + 1
   else
      bad = bad + 1
   end
end

function done(summary, latency, requests)
   local ok_total, bad_total = 0, 0
   for _, thread in ipairs(threads) do
      ok_total = ok_total + thread:get("ok")
      bad_total = bad_total + thread:get("bad")
   end
   local e = summary.errors
   io.write(string.format('CALL_LOAD_JSON {"requests": %d, "seconds": %.6f, '
      .. '"p50_ms": %.4f, "p99_ms": %.4f, "max_ms": %.4f, "ok": %d, "bad": %d, '
      .. '"errors": %d, "status_errors": %d}\n',
      summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000,
      latency:percentile(99) / 1000, latency.max / 1000, ok_total, bad_total,
      e.connect + e.read + e.write + e.timeout, e.status))
end

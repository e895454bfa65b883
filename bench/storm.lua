-- wrk script: POST the JSON object given after `--` with a dedup_key added to each
-- request, as a monitoring storm sends them: most alerts new, and every Nth one (the
-- second argument, default 5) a repeat of one of the 20 newest, still open.
--   wrk -t2 -c16 -d10s -s bench/storm.lua http://127.0.0.1:PORT/v2/enqueue -- '{...}' 5
-- Prints one JSON line of results for bench/lifecycle.py, as post.lua does.

local threads = 0

function setup(thread)
   threads = threads + 1
   thread:set("thread", threads)
end

function init(args)
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   head = args[1]:sub(1, -2) .. ', "dedup_key": "'  -- the object, less its closing brace
   every = tonumber(args[2] or "5")
   math.randomseed(os.time() * 100 + thread)
   run = string.format("%08x-%d", math.random(0, 2 ^ 31), thread)  -- new keys per run
   fresh, sent = 0, 0
end

function request()
   sent = sent + 1
   local n
   if sent % every == 0 and fresh > 0 then
      n = math.max(1, fresh - math.random(0, 19))  -- a repeat
   else
      fresh = fresh + 1
      n = fresh
   end
   return wrk.format(nil, nil, nil, head .. run .. "-" .. n .. '"}')
end

function done(summary, latency, requests)
   local seconds = summary.duration / 1e6
   local errors = summary.errors
   io.write(string.format(
      'BENCH {"requests": %d, "seconds": %.3f, "rps": %.1f, "p50_ms": %.3f, "p90_ms": %.3f,'
         .. ' "p99_ms": %.3f, "max_ms": %.3f, "non_2xx": %d, "socket_errors": %d}\n',
      summary.requests, seconds, summary.requests / seconds,
      latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
      latency:percentile(99) / 1e3, latency.max / 1e3,
      errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end

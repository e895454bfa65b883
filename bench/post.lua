-- wrk script: POST the JSON body given after `--` to the URL, then print one JSON
-- line of results for bench/run.py (requests/s, latency percentiles, errors).
--   wrk -t2 -c16 -d10s -s bench/post.lua http://127.0.0.1:PORT/rpc -- '{"action": ...}'

function init(args)
   wrk.method = "POST"
   wrk.body = args[1]
   wrk.headers["Content-Type"] = "application/json"
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

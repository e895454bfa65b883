-- wrk script: POST the JSON object given after `--` with a dedup_key added to each
-- request, as a monitoring storm sends them: most alerts new, and every Nth one (the
-- second argument, default 5) a repeat of one of the 20 newest, still open.
--   wrk -t2 -c16 -d10s -s bench/storm.lua http://127.0.0.1:PORT/v2/enqueue -- '{...}' 5
-- Prints one JSON line of results for bench/lifecycle.py: post.lua's `done`.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "post.lua")  -- its `done`; `init` below replaces its `init`
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

-- wrk script for benches/soak_bench.sh: a random mix of index.json, VERSION.json and
-- package requests over keep-alive connections.
--
--   wrk -t T -c C -d D -s benches/soak.lua https://127.0.0.1:PORT -- PATHS [INDEX% VERSION%]
--
-- PATHS has one "KIND PATH" per line, KIND index, version or package. Each thread draws a
-- ring of requests once at start (kind by weight, then a path of that kind at random), so
-- request() costs a table lookup. No response() callback: with one, wrk would copy every
-- body into Lua; wrk counts non-2xx/3xx answers itself (summary.errors.status).
-- done() prints one line "SOAK_RESULT {json}" for the bench script.

local threads = 0

function setup(thread)
   thread:set("thread_id", threads)
   threads = threads + 1
end

local ring = {}
local ring_n = 0
local pos = 0

function init(args)
   local file = args[1]
   if not file then
      error("usage: -- PATHS [INDEX% VERSION%]")
   end
   local w_index = tonumber(args[2] or "30") / 100
   local w_version = tonumber(args[3] or "40") / 100
   local lists = { index = {}, version = {}, package = {} }
   for line in io.lines(file) do
      local kind, path = line:match("^(%S+)%s+(%S+)$")
      if kind and lists[kind] then
         table.insert(lists[kind], path)
      end
   end
   for kind, l in pairs(lists) do
      if #l == 0 then
         error("no " .. kind .. " paths in " .. file)
      end
   end
   math.randomseed(os.time() + 7919 * ((thread_id or 0) + 1))
   ring_n = 16384
   for i = 1, ring_n do
      local r = math.random()
      local l
      if r < w_index then
         l = lists.index
      elseif r < w_index + w_version then
         l = lists.version
      else
         l = lists.package
      end
      ring[i] = wrk.format("GET", l[math.random(#l)])
   end
   pos = math.random(ring_n) - 1
end

function request()
   pos = pos % ring_n + 1
   return ring[pos]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'SOAK_RESULT {"requests":%.0f,"bytes":%.0f,"duration_us":%.0f,'
         .. '"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f,'
         .. '"lat_mean_us":%.1f,"lat_max_us":%.0f,"p50_us":%.0f,"p90_us":%.0f,'
         .. '"p99_us":%.0f,"p999_us":%.0f}\n',
      summary.requests, summary.bytes, summary.duration,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9)))
end

-- Pipelined GETs: each connection sends DEPTH requests for PATH in one write
-- and wrk counts each response.
--   wrk -t1 -c32 -d10s -s benches/wrk/pipeline.lua http://127.0.0.1:8094 -- 16 /hello
-- Arguments: depth (default 16), path (default /hello).

local depth = 16
local path = "/hello"
local batch

function init(args)
   depth = tonumber(args[1]) or depth
   path = args[2] or path
   local reqs = {}
   for i = 1, depth do
      reqs[i] = wrk.format("GET", path)
   end
   batch = table.concat(reqs)
end

function request()
   return batch
end

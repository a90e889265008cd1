-- GET the 10-key JSON document.
--   wrk -t1 -c32 -d10s -s benches/wrk/json.lua http://127.0.0.1:8094/json
-- The path comes from the URL; a bare URL (path "/") means /json. An
-- argument after `--` overrides it.

wrk.method = "GET"
wrk.headers["Accept"] = "application/json"

function init(args)
   if args[1] then
      wrk.path = args[1]
   elseif wrk.path == "/" then
      wrk.path = "/json"
   end
end

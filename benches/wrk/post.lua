-- POST a 1 KiB body (the server should echo it).
--   wrk -t1 -c32 -d10s -s benches/wrk/post.lua http://127.0.0.1:8094/echo
-- Optional argument: the body size in bytes (default 1024).

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.body = string.rep("x", 1024)

function init(args)
   local size = tonumber(args[1])
   if size then
      wrk.body = string.rep("x", size)
   end
end

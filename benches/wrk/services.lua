-- benches/services.sh: requests for one service, cycled in order.
--   wrk -s benches/wrk/services.lua http://127.0.0.1:PORT -- spellcheck|classifier|usernames
local sets = {
    spellcheck = {
        method = "GET",
        paths = {
            "/correct?q=speling", "/correct?q=recieve", "/correct?q=korrectud", "/correct?q=definately",
            "/correct?q=acommodate", "/correct?q=wierd", "/correct?q=untill", "/correct?q=becuase",
            "/correct?q=tommorow", "/correct?q=seperate",
        },
    },
    classifier = {
        method = "POST",
        path = "/classify",
        bodies = {
            "Acme wireless earbuds with microphone", "cast iron skillet pre-seasoned", "dog harness no pull",
            "illustrated history of rome box set", "waterproof rain jacket women's", "wooden train set for toddlers",
            "yoga mat 6mm thick", "vitamin c serum for dry skin", "expandable garden hose 30 m",
            "tyre inflator 12v digital",
        },
    },
    usernames = {
        method = "GET",
        paths = {
            "/available?name=olivia.smith42", "/available?name=olivia.smith300", "/available?name=liam.garcia7",
            "/available?name=ada.lovelace", "/available?name=emma.jones299", "/available?name=grace.hopper",
            "/available?name=noah.kim150", "/available?name=zoe.brown301", "/available?name=mia.lee3",
            "/available?name=alan.turing",
        },
    },
}

local requests = {}
local n = 0

function init(args)
    local set = sets[args[1]]
    if set == nil then
        error("unknown service " .. tostring(args[1]) .. " (spellcheck, classifier, usernames)")
    end
    if set.bodies then
        for _, title in ipairs(set.bodies) do
            local body = '{"title": "' .. title .. '"}'
            requests[#requests + 1] = wrk.format(set.method, set.path, {["Content-Type"] = "application/json"}, body)
        end
    else
        for _, path in ipairs(set.paths) do
            requests[#requests + 1] = wrk.format(set.method, path)
        end
    end
end

function request()
    n = n % #requests + 1
    return requests[n]
end

-- wrk script for the processor's reference server: sends the signed authorizations written
-- by reference-requests.py (the file is wrk's first script argument), round robin, and
-- counts every answer that is not a signed 200. The reference answers a bad signature by
-- never answering, which wrk does not count at all: scripts/perf checks a sample of the same
-- requests before the load (reference-requests.py check).
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

local api_key = "Lp0g+cwb19eEfTn1YIOydEnqPcZOg8YxHctnMe+1cQA="
local endpoint = "/transactions/authorizations"
local requests = {}
local next_request = 1
bad = 0

function init(args)
  for line in io.lines(args[1]) do
    local ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
    requests[#requests + 1] = wrk.format("POST", endpoint, {
      ["Content-Type"] = "application/json",
      ["X-Api-Key"] = api_key,
      ["X-Endpoint"] = endpoint,
      ["X-Timestamp"] = ts,
      ["X-Signature"] = sig,
    }, body)
  end
  -- Each thread starts at its own place in the list.
  next_request = (id or 0) * 7919 % #requests + 1
end

function request()
  local r = requests[next_request]
  next_request = next_request % #requests + 1
  return r
end

function response(status, headers, body)
  local signed = false
  for name, value in pairs(headers) do
    if name:lower() == "x-signature" and value:sub(1, 12) == "hmac-sha256 " then
      signed = true
    end
  end
  if status ~= 200 or not signed then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local total_bad = 0
  for _, thread in ipairs(threads) do
    total_bad = total_bad + thread:get("bad")
  end
  io.write(string.format("answers not signed 200: %d\n", total_bad))
  io.write(string.format("requests: %d in %.3f s\n", summary.requests, summary.duration / 1e6))
end

-- wrk script: users of the SMS checker. A quarter of the requests come
-- from new users (no cookie); the rest from users seen before, each
-- carrying the user cookie the gateway set. Used by `make load`.
local messages = {
  '{"sms":"Are we still on for lunch tomorrow?"}',
  '{"sms":"WINNER!! You have won a free prize, call 09061701461 now to claim"}',
  '{"sms":"Ok lar... Joking wif u oni..."}',
}
local users = {}
local n = 0

function request()
  n = n + 1
  local headers = { ["Content-Type"] = "application/json" }
  if #users > 0 and n % 4 ~= 0 then
    headers["Cookie"] = "sms-checker-uid=" .. users[math.random(#users)]
  end
  return wrk.format("POST", "/predict", headers, messages[n % #messages + 1])
end

function response(status, headers, body)
  local cookie = headers["set-cookie"] or headers["Set-Cookie"]
  if cookie then
    local uid = cookie:match("sms%-checker%-uid=([^;]+)")
    if uid and #users < 5000 then
      users[#users + 1] = uid
    end
  end
end

-- May this caller call the hop? One round trip per admitted or rejected call.
--
-- KEYS[1]  the breaker's state hash (absent = closed)
-- ARGV[1]  now, wall-clock milliseconds (the caller's clock)
-- ARGV[2]  a token naming this caller, should it become the half-open trial
-- ARGV[3]  how long a trial may hold its slot (ms) before another caller may take it over
-- ARGV[4]  the state hash's time to live (ms)
--
-- Returns {verdict, state, until}:
--   'normal'   closed: call, and report the outcome as an ordinary call
--   'halfOpen' this caller moved the breaker open -> half-open and holds the trial
--   'trial'    half-open with a free (or expired) trial slot: this caller took it
--   'reject'   open (until `until`), or another caller's trial lease is still running
local now = tonumber(ARGV[1])
local s = redis.call('HMGET', KEYS[1], 'state', 'until', 'trial', 'lease')
local state = s[1]
if not state or state == 'closed' then
  return {'normal', 'closed', 0}
end

local function take_trial(verdict)
  redis.call('HSET', KEYS[1], 'state', 'halfOpen', 'trial', ARGV[2],
    'lease', now + tonumber(ARGV[3]))
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {verdict, 'halfOpen', 0}
end

if state == 'open' then
  local open_until = tonumber(s[2]) or 0
  if now < open_until then
    return {'reject', 'open', open_until}
  end
  return take_trial('halfOpen')
end

-- half-open: the slot is taken while its lease runs
if s[3] and now < (tonumber(s[4]) or 0) then
  return {'reject', 'halfOpen', 0}
end
return take_trial('trial')

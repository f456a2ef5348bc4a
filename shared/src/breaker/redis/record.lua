-- Records one call's outcome and decides the transition. One round trip per outcome.
--
-- KEYS[1]  the breaker's state hash (absent = closed)
-- KEYS[2]  the rolling window: a hash of '<bucket>:c' (calls) and '<bucket>:f' (failures),
--          where <bucket> = floor(now / bucket_ms), so every replica writes the same fields
-- ARGV[1]  now, wall-clock milliseconds (the caller's clock)
-- ARGV[2]  '1' failure, '0' success
-- ARGV[3]  the trial's token, or '' for an ordinary call admitted while closed
-- ARGV[4]  bucket length (ms); the window is 10 buckets
-- ARGV[5]  min calls in the window before it may open
-- ARGV[6]  threshold: opens when failures * 100 > threshold * calls
-- ARGV[7]  how long to stay open if this outcome opens the breaker (ms, jitter drawn by the caller)
-- ARGV[8]  time to live of both keys (ms)
-- ARGV[9]  '1' enabled, '0' disabled (count, never open)
-- ARGV[10] the count policy's failures (opens at that many failures in the window, whatever
--          the calls), or '0' for the rate rule of ARGV[5] and ARGV[6]
--
-- Returns {transition, state, until, calls, failures}; transition is
--   'none'      counted, no change
--   'opened'    closed -> open: this outcome tripped the window
--   'reopened'  the trial failed: open again for ARGV[7]
--   'closed'    the trial succeeded: closed, window cleared
--   'stale'     not counted: an ordinary call that lands after the breaker left closed, or a
--               trial whose lease was taken over
local now = tonumber(ARGV[1])
local failed = ARGV[2] == '1'
local token = ARGV[3]
local bucket_ms = tonumber(ARGV[4])
local ttl = ARGV[8]
local BUCKETS = 10
local current = math.floor(now / bucket_ms)

-- Drops buckets that left the window, counts this outcome, returns the window's totals.
local function count()
  local calls, failures = 1, failed and 1 or 0
  local fields = redis.call('HGETALL', KEYS[2])
  local gone = {}
  for i = 1, #fields, 2 do
    local bucket, kind = string.match(fields[i], '^(%d+):(%a)$')
    bucket = tonumber(bucket)
    if not bucket or bucket <= current - BUCKETS then
      gone[#gone + 1] = fields[i]
    elseif kind == 'c' then
      calls = calls + tonumber(fields[i + 1])
    else
      failures = failures + tonumber(fields[i + 1])
    end
  end
  if #gone > 0 then
    redis.call('HDEL', KEYS[2], unpack(gone))
  end
  local prefix = string.format('%d:', current)
  redis.call('HINCRBY', KEYS[2], prefix .. 'c', 1)
  if failed then
    redis.call('HINCRBY', KEYS[2], prefix .. 'f', 1)
  end
  redis.call('PEXPIRE', KEYS[2], ttl)
  return calls, failures
end

local function open(transition, calls, failures)
  local open_until = now + tonumber(ARGV[7])
  redis.call('HSET', KEYS[1], 'state', 'open', 'until', open_until)
  redis.call('HDEL', KEYS[1], 'trial', 'lease')
  redis.call('PEXPIRE', KEYS[1], ttl)
  return {transition, 'open', open_until, calls, failures}
end

local s = redis.call('HMGET', KEYS[1], 'state', 'trial', 'until')
local state = s[1] or 'closed'

if token ~= '' then
  if state ~= 'halfOpen' or s[2] ~= token then
    return {'stale', state, tonumber(s[3]) or 0, 0, 0}
  end
  if failed then
    local calls, failures = count()
    return open('reopened', calls, failures)
  end
  redis.call('DEL', KEYS[1], KEYS[2])
  return {'closed', 'closed', 0, 0, 0}
end

if state ~= 'closed' then
  return {'stale', state, tonumber(s[3]) or 0, 0, 0}
end
local calls, failures = count()
local limit = tonumber(ARGV[10])
local trips
if limit > 0 then
  trips = failures >= limit
else
  trips = calls >= tonumber(ARGV[5]) and failures * 100 > tonumber(ARGV[6]) * calls
end
if failed and ARGV[9] == '1' and trips then
  return open('opened', calls, failures)
end
return {'none', 'closed', 0, calls, failures}

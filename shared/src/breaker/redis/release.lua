-- Gives a half-open trial slot back without a verdict (the trial ended in a 4xx, or its caller
-- went away), so the next caller may take it at once instead of waiting out the lease.
--
-- KEYS[1]  the breaker's state hash
-- ARGV[1]  the trial's token: only the holder frees the slot
if redis.call('HGET', KEYS[1], 'trial') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'trial', 'lease')
  return 1
end
return 0

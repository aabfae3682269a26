"""Lua scripts behind the Redis broker: each state change is one atomic script.

Keys are derived inside the scripts from a per-queue prefix `qscale:q:<queue>:`
passed in ARGV (the layout is documented in worker/brokers/redis.py). That is
fine on a single Redis primary (or Sentinel); Redis Cluster is not supported.
Times come from the server clock (`TIME`) so producers and workers with skewed
clocks agree on when a delayed message is due. Priorities are single digits:
tags end in `.<digit>` and internal entries start with (or carry) that digit.
"""

from __future__ import annotations

# A script that fails half-way keeps its first writes (Redis runs no rollback): a
# claim removed with the retry not written is a lost message. So every script checks
# the type of each key it will write before it writes anything; a wrong one (another
# program's key) refuses the whole operation with WRONGTYPE, which the broker turns
# into MessageRefused.
_HELPERS = """
local function wrong(key, kind)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= kind then return t end
  return false
end
local function expect(key, kind)
  local t = wrong(key, kind)
  if t then error({err = 'WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a ' .. kind}) end
end
local function queue_ok(base, owner)
  for p = 1, 9 do if wrong(base .. 'ready:' .. p, 'list') then return false end end
  return not (wrong(base .. 'ready', 'list') or wrong(base .. 'redelivered', 'list')
    or wrong(base .. 'delayed', 'zset') or wrong(base .. 'dead', 'list')
    or wrong(base .. 'owners', 'set') or wrong(base .. 'redeliveries', 'hash')
    or wrong(base .. 'inflight:' .. owner, 'hash'))
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function ready_key(base, prio)
  if prio == '0' or prio == 0 then return base .. 'ready' end
  return base .. 'ready:' .. prio
end
"""

# ARGV: owner, lease_ms, max_count, first_seq, reclaim(0/1), due_limit,
#       max_redeliveries (0 = no cap), max_bytes, max_body (0 = any), prefix...
# Returns {reclaimed_count, over_cap_count, skipped queue indexes ("2,5"), tag1, body1,
# redelivered1, queue_index1, times_redelivered1, size1, tag2, ...}; a body longer
# than max_body comes cut to its first 512 bytes with size its real length (the whole
# body stays in the claim, where the dead-letter script finds it). A queue with a key of
# another type (another program's) is skipped, the others are served. A reclaimed
# message (its owner died, most likely while running it: the whole pod was OOM-killed)
# counts one redelivery in `redeliveries` (field: SHA-1 of the body) and goes first in
# line. One taken while its count is over
# the cap comes back with that count, and the worker settles it dead (recording
# FAILURE) without running it. A claim stops once its bodies reach max_bytes (always
# at least one message), putting the rest back where it was.
CLAIM = _HELPERS + """
local owner = ARGV[1]
local want = tonumber(ARGV[3])
local seq = tonumber(ARGV[4])
local reclaim = ARGV[5] == '1'
local due_limit = tonumber(ARGV[6])
local max_redeliveries = tonumber(ARGV[7])
local budget = tonumber(ARGV[8])
local max_body = tonumber(ARGV[9])
redis.call('SET', 'qscale:alive:' .. owner, '1', 'PX', ARGV[2])
local now = now_ms()
local out = {0, 0, ''}

local function reclaim_dead(base)
  local owners = redis.call('SMEMBERS', base .. 'owners')
  for _, other in ipairs(owners) do
    if redis.call('EXISTS', 'qscale:alive:' .. other) == 0 then
      local held = base .. 'inflight:' .. other
      local kv = redis.call('HGETALL', held)
      for j = 1, #kv, 2 do
        if max_redeliveries > 0 then
          redis.call('HINCRBY', base .. 'redeliveries', redis.sha1hex(kv[j + 1]), 1)
        end
        redis.call('LPUSH', base .. 'redelivered', string.sub(kv[j], -1) .. kv[j + 1])
      end
      redis.call('DEL', held)
      redis.call('SREM', base .. 'owners', other)
      out[1] = out[1] + #kv / 2
    end
  end
end

local function promote_due(base)
  local delayed = base .. 'delayed'
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, due_limit)
  if #due == 0 then return end
  redis.call('ZREM', delayed, unpack(due))
  for _, member in ipairs(due) do
    redis.call('LPUSH', ready_key(base, string.sub(member, 17, 17)), string.sub(member, 18))
  end
end

local function take(qi, base, key, prio, redelivered, fields)
  local items = redis.call('RPOP', key, want)
  if not items then return end
  local taken = 0
  for _, item in ipairs(items) do
    if budget <= 0 and #out > 3 then break end
    taken = taken + 1
    local p, body = prio, item
    if redelivered == 1 then
      p, body = string.sub(item, 1, 1), string.sub(item, 2)
    end
    local times = 0
    if redelivered == 1 and max_redeliveries > 0 then
      times = tonumber(redis.call('HGET', base .. 'redeliveries', redis.sha1hex(body)) or '0')
      if times <= max_redeliveries then times = 0 else out[2] = out[2] + 1 end
    end
    local tag = string.format('%d.%s', seq, p)
    seq = seq + 1
    local size, handed = 0, body
    if max_body > 0 and #body > max_body then size, handed = #body, string.sub(body, 1, 512) end
    budget = budget - #handed
    fields[#fields + 1] = tag
    fields[#fields + 1] = body
    out[#out + 1] = tag
    out[#out + 1] = handed
    out[#out + 1] = redelivered
    out[#out + 1] = qi
    out[#out + 1] = times
    out[#out + 1] = size
  end
  for i = #items, taken + 1, -1 do  -- over the byte budget: back where they were
    redis.call('RPUSH', key, items[i])
  end
  want = want - taken
  if budget <= 0 then want = 0 end
end

for i = 10, #ARGV do
  local base = ARGV[i]
  if not queue_ok(base, owner) then
    out[3] = out[3] .. (out[3] == '' and '' or ',') .. (i - 9)
  else
  if reclaim then reclaim_dead(base) end
  promote_due(base)
  if want > 0 then
    local fields = {}
    take(i - 9, base, base .. 'redelivered', '0', 1, fields)
    for p = 9, 0, -1 do
      if want <= 0 then break end
      take(i - 9, base, ready_key(base, tostring(p)), tostring(p), 0, fields)
    end
    if #fields > 0 then
      redis.call('HSET', base .. 'inflight:' .. owner, unpack(fields))
      redis.call('SADD', base .. 'owners', owner)
    end
  end
  end
end
return out
"""

# ARGV: prefix, token16, priority digit, body, delay_ms. Schedules a new message.
SCHEDULE = _HELPERS + """
expect(ARGV[1] .. 'delayed', 'zset')
redis.call('ZADD', ARGV[1] .. 'delayed', now_ms() + tonumber(ARGV[5]),
           ARGV[2] .. ARGV[3] .. ARGV[4])
return 1
"""

# ARGV: prefix, owner, tag, token16, body, delay_ms. Returns 0 if the claim was lost.
RETRY_LATER = _HELPERS + """
expect(ARGV[1] .. 'inflight:' .. ARGV[2], 'hash')
expect(ARGV[1] .. 'delayed', 'zset')
if redis.call('HDEL', ARGV[1] .. 'inflight:' .. ARGV[2], ARGV[3]) == 0 then return 0 end
redis.call('ZADD', ARGV[1] .. 'delayed', now_ms() + tonumber(ARGV[6]),
           ARGV[4] .. string.sub(ARGV[3], -1) .. ARGV[5])
return 1
"""

# ARGV: prefix, owner, tag, record. Returns 0 if the claim was lost.
DEAD_LETTER = _HELPERS + """
expect(ARGV[1] .. 'inflight:' .. ARGV[2], 'hash')
expect(ARGV[1] .. 'dead', 'list')
if redis.call('HDEL', ARGV[1] .. 'inflight:' .. ARGV[2], ARGV[3]) == 0 then return 0 end
redis.call('RPUSH', ARGV[1] .. 'dead', ARGV[4])
return 1
"""

# ARGV: prefix, owner, tag... Puts held messages first in line; returns how many.
REQUEUE = _HELPERS + """
local held = ARGV[1] .. 'inflight:' .. ARGV[2]
expect(held, 'hash')
expect(ARGV[1] .. 'redelivered', 'list')
local moved = 0
for i = #ARGV, 3, -1 do
  local body = redis.call('HGET', held, ARGV[i])
  if body then
    redis.call('HDEL', held, ARGV[i])
    redis.call('RPUSH', ARGV[1] .. 'redelivered', string.sub(ARGV[i], -1) .. body)
    moved = moved + 1
  end
end
return moved
"""

# ARGV: owner, first_seq, last_seq, prefix... Gives back claims whose reply was lost.
RELEASE_RANGE = _HELPERS + """
local first, last = tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 4, #ARGV do
  expect(ARGV[i] .. 'inflight:' .. ARGV[1], 'hash')
  expect(ARGV[i] .. 'redelivered', 'list')
end
local moved = 0
for i = 4, #ARGV do
  local held = ARGV[i] .. 'inflight:' .. ARGV[1]
  local kv = redis.call('HGETALL', held)
  for j = 1, #kv, 2 do
    local seq = tonumber(string.match(kv[j], '^(%d+)%.'))
    if seq and seq >= first and seq <= last then
      redis.call('HDEL', held, kv[j])
      redis.call('LPUSH', ARGV[i] .. 'redelivered', string.sub(kv[j], -1) .. kv[j + 1])
      moved = moved + 1
    end
  end
end
return moved
"""

# ARGV: prefix. Returns {ready, in_flight, delayed, dead}, read in one atomic step.
# Delayed messages already due count as ready: they are demand now, claimed or not
# (the controller scales a pool up for a due retry even with nobody consuming).
STATS = _HELPERS + """
local base = ARGV[1]
local ready = redis.call('LLEN', base .. 'ready') + redis.call('LLEN', base .. 'redelivered')
for p = 1, 9 do ready = ready + redis.call('LLEN', base .. 'ready:' .. p) end
local in_flight = 0
for _, owner in ipairs(redis.call('SMEMBERS', base .. 'owners')) do
  in_flight = in_flight + redis.call('HLEN', base .. 'inflight:' .. owner)
end
local delayed = redis.call('ZCARD', base .. 'delayed')
local due = redis.call('ZCOUNT', base .. 'delayed', '-inf', now_ms())
return {ready + due, in_flight, delayed - due, redis.call('LLEN', base .. 'dead')}
"""

# ARGV: prefix. Deletes the dead-letter list; returns how many records it held.
PURGE_DEAD = """
local n = redis.call('LLEN', ARGV[1] .. 'dead')
redis.call('DEL', ARGV[1] .. 'dead')
return n
"""

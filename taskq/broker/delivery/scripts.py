"""The Lua scripts of the delivery contract; each is one atomic step (see the package doc).

Times are Redis's (``TIME``), in milliseconds. ``flags=allow-oom``: a Redis at ``maxmemory``
with ``noeviction`` still runs them. They free memory (acks, restores) or write a few bytes
(leases, run leases); refusing them would wedge a worker whose work is done. Only the pop
(``taskq.broker.redis_transport.POP_AND_HOLD``) is refused then: no new work under OOM.
"""

from __future__ import annotations

from taskq.broker.delivery.keys import LEASE_PREFIX
from taskq.broker.result_backend import WRITE_META_LUA

#: Shared helpers. ``stalled_or_grace``: true while lease-based restores must wait, because
#: no holder renewed for ``gap`` ms (the broker or every worker was away: a grace opens),
#: the clock record was written by another Redis process (its ``epoch``, the writer's
#: ``run_id``: a promoted replica or a restart, whose clock is not the writer's), or the
#: clock went back, or such a grace is still open. A new epoch or a clock gone back also
#: cut every holder's lease to one grace (``cap_leases``): a lease written with a clock
#: ahead of this one would otherwise outlive its holder by the difference.
_PRELUDE = f"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function lease_alive(holder)
  return holder ~= '' and redis.call('EXISTS', '{LEASE_PREFIX}' .. holder) == 1
end
local function server_epoch()
  return string.match(redis.call('INFO', 'server'), 'run_id:(%w+)') or ''
end
local function cap_leases(holders, cap)
  local seen = {{}}
  for _, holder in ipairs(redis.call('HVALS', holders)) do
    if not seen[holder] then
      seen[holder] = true
      local key = '{LEASE_PREFIX}' .. holder
      if redis.call('PTTL', key) > cap then redis.call('PEXPIRE', key, cap) end
    end
  end
end
local function stalled_or_grace(clock, now, gap, grace, holders)
  local c = redis.call('HMGET', clock, 'last', 'grace_until', 'epoch')
  local last = tonumber(c[1])
  local epoch = server_epoch()
  if (not last) or now - last > gap or now < last or c[3] ~= epoch then
    redis.call('HSET', clock, 'grace_until', now + grace, 'epoch', epoch)
    if c[3] ~= epoch or (last and now < last) then cap_leases(holders, grace) end
    return true
  end
  return now < (tonumber(c[2]) or 0)
end
local function run_owner(run)
  if not run then return nil, nil end
  return string.match(run, '^(.*)|([^|]*)$')
end
"""

#: KEYS: lease, clock, holders. ARGV: ttl ms, stall gap ms, grace ms. Renews the lease; a
#: renewal that finds the last stamp older than the gap, or a new epoch, opens the grace first.
RENEW = (
    "#!lua flags=allow-oom\n"
    + _PRELUDE
    + """
local now = now_ms()
stalled_or_grace(KEYS[2], now, tonumber(ARGV[2]), tonumber(ARGV[3]), KEYS[3])
redis.call('HSET', KEYS[2], 'last', now)
redis.call('SET', KEYS[1], now, 'PX', tonumber(ARGV[1]))
return now
"""
)

#: KEYS: lease. ARGV: none. A holder that stops cleanly gives its lease up.
RELEASE = "#!lua flags=allow-oom\nreturn redis.call('DEL', KEYS[1])\n"

#: KEYS: unacked, unacked_index, holders. ARGV: delivery tag, holder. The acknowledgement;
#: it changes nothing when another holder holds the tag now (kombu reuses a message's tag
#: when it is delivered again: a late ack must not remove the new holder's record).
ACK = """#!lua flags=allow-oom
local holder = redis.call('HGET', KEYS[3], ARGV[1])
if holder and holder ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
"""

#: KEYS: unacked_index, holders, clock. ARGV: gap ms, grace ms, visibility ms, limit.
#: Returns ``[tag, holder, ...]`` of records whose holder's lease expired (or, for a record
#: without a holder, written by a stock kombu consumer, older than the visibility timeout).
SWEEP = (
    "#!lua flags=allow-oom\n"
    + _PRELUDE
    + """
local now = now_ms()
if stalled_or_grace(KEYS[3], now, tonumber(ARGV[1]), tonumber(ARGV[2]), KEYS[2]) then
  return {}
end
local limit = tonumber(ARGV[4])
local found = {}
local alive = {}
local entries = redis.call('ZRANGE', KEYS[1], 0, 999, 'WITHSCORES')
for i = 1, #entries, 2 do
  local tag = entries[i]
  local holder = redis.call('HGET', KEYS[2], tag)
  local dead
  if holder then
    if alive[holder] == nil then alive[holder] = lease_alive(holder) end
    dead = not alive[holder]
  else
    holder = ''
    dead = tonumber(entries[i + 1]) * 1000 < now - tonumber(ARGV[3])
  end
  if dead then
    found[#found + 1] = tag
    found[#found + 1] = holder
    if #found >= 2 * limit then break end
  end
end
return found
"""
)

#: Compare-and-move of one held message back to its queue.
#: KEYS: unacked, unacked_index, holders, clock, run lease, then ``ndest`` queue lists, then
#: doorbells. ARGV: tag, mode, expected record, payload to push, leftmost (1/0), ndest, gap
#: ms, grace ms, visibility ms, the caller's holder id (``return`` and ``reject`` act only
#: on what the caller itself holds). Modes: ``sweep`` (the holder's lease expired, no grace),
#: ``return`` (the live holder returns a delivery it never started), ``reject`` (the
#: holder says the execution ended). Returns 1 moved, 0 the record is gone or changed,
#: -1 kept (the reason does not hold).
RESTORE = (
    "#!lua flags=allow-oom\n"
    + _PRELUDE
    + """
local tag, mode = ARGV[1], ARGV[2]
if redis.call('HGET', KEYS[1], tag) ~= ARGV[3] then return 0 end
local holder = redis.call('HGET', KEYS[3], tag) or ''
local owner, run_tag = run_owner(redis.call('GET', KEYS[5]))
local ours = run_tag == tag
if mode == 'sweep' then
  local now = now_ms()
  if stalled_or_grace(KEYS[4], now, tonumber(ARGV[7]), tonumber(ARGV[8]), KEYS[3]) then
    return -1
  end
  if holder ~= '' then
    if lease_alive(holder) then return -1 end
  else
    local score = tonumber(redis.call('ZSCORE', KEYS[2], tag) or '0')
    if score * 1000 >= now - tonumber(ARGV[9]) then return -1 end
  end
elseif mode == 'return' or mode == 'reject' then
  if holder ~= '' and holder ~= ARGV[10] then return 0 end
  if mode == 'return' and ours then return -1 end
else
  return redis.error_reply('unknown restore mode ' .. mode)
end
if ours then redis.call('DEL', KEYS[5]) end
redis.call('HDEL', KEYS[1], tag)
redis.call('ZREM', KEYS[2], tag)
redis.call('HDEL', KEYS[3], tag)
local ndest = tonumber(ARGV[6])
for i = 1, ndest do
  if ARGV[5] == '1' then
    redis.call('LPUSH', KEYS[5 + i], ARGV[4])
  else
    redis.call('RPUSH', KEYS[5 + i], ARGV[4])
  end
end
for i = 6 + ndest, #KEYS do
  redis.call('LPUSH', KEYS[i], 1)
  redis.call('LTRIM', KEYS[i], 0, 0)
end
return 1
"""
)

#: The execution guard at an attempt's start. KEYS: the task's result meta (Celery's
#: ``celery-task-meta-<id>``: a SUCCESS there is the completion record), delivery counter,
#: run lease, revocation. ARGV: holder, tag, ttl s, count (1: count this delivery), the
#: STARTED meta to write ('' for none), its expiry s. Returns ``[verdict, stored meta or
#: '', deliveries]`` with verdict ``fenced`` (the caller's own lease expired: it is presumed
#: dead and what it holds may run elsewhere, so it starts nothing), ``done`` (the task
#: already succeeded), ``revoked``
#: (revoked before it started: it never runs), ``busy`` (a live holder's other delivery
#: runs it) or ``run`` (the run lease is ours; STARTED is written by the result backend's
#: rule: never over a final state or a later attempt).
BEGIN = (
    "#!lua flags=allow-oom\n"
    + _PRELUDE
    + WRITE_META_LUA
    + """
local ttl = tonumber(ARGV[3])
-- Refused deliveries come first: they run nothing, so they count as no delivery.
if ARGV[1] ~= '' and not lease_alive(ARGV[1]) then return {'fenced', '', 0} end
if redis.call('EXISTS', KEYS[4]) == 1 then return {'revoked', '', 0} end
local deliveries = 0
if ARGV[4] == '1' then
  deliveries = redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], ttl)
end
local stored = redis.call('GET', KEYS[1])
if stored then
  local ok, meta = pcall(cjson.decode, stored)
  if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then
    return {'done', stored, deliveries}
  end
end
local owner, run_tag = run_owner(redis.call('GET', KEYS[3]))
if owner and run_tag ~= ARGV[2] and lease_alive(owner) then
  return {'busy', '', deliveries}
end
redis.call('SET', KEYS[3], ARGV[1] .. '|' .. ARGV[2], 'EX', ttl)
if ARGV[5] ~= '' then write_meta(KEYS[1], ARGV[5], tonumber(ARGV[6])) end
return {'run', '', deliveries}
"""
)

#: KEYS: run lease. ARGV: ``holder|tag``. Ends the run lease if it is still ours (an
#: attempt that did not succeed; a success needs nothing: its SUCCESS meta answers every
#: later copy).
RELEASE_RUN = """#!lua flags=allow-oom
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

#: A revocation, final and atomic with :data:`BEGIN`. KEYS: result meta, revocation.
#: ARGV: the REVOKED meta, its expiry s. Returns ``[outcome, stored status]``: ``revoked``
#: (stored now, or already: the task will never start), ``running`` (STARTED: it started
#: before the revocation) or ``finished`` (SUCCESS or FAILURE).
REVOKE = (
    "#!lua flags=allow-oom\n"
    + """
local status = 'PENDING'
local stored = redis.call('GET', KEYS[1])
if stored then
  local ok, meta = pcall(cjson.decode, stored)
  if ok and type(meta) == 'table' and type(meta['status']) == 'string' then
    status = meta['status']
  end
end
if status == 'SUCCESS' or status == 'FAILURE' then return {'finished', status} end
if status == 'STARTED' then return {'running', status} end
if status ~= 'REVOKED' then
  local expires = tonumber(ARGV[2])
  if expires <= 0 then expires = 86400 end
  redis.call('SET', KEYS[2], 1, 'EX', expires)
  redis.call('SET', KEYS[1], ARGV[1], 'EX', expires)
  redis.call('PUBLISH', KEYS[1], ARGV[1])
end
return {'revoked', 'REVOKED'}
"""
)

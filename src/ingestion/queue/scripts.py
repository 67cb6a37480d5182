"""The Lua scripts of the Redis queue: each one is a step that must happen atomically.

Field lists travel as flat `k1, v1, k2, v2, …` ARGV tails; delayed jobs are stored in the
delayed sorted set as the JSON array of that flat list (unique: it carries `enqueuedAt`).
"""

from __future__ import annotations

__all__ = [
    "ACK",
    "DEAD_LETTER",
    "ENQUEUE",
    "LOCK_ACQUIRE",
    "LOCK_RELEASE",
    "LOCK_RENEW",
    "PROMOTE",
    "REQUEUE_DEAD",
    "RESCHEDULE",
]

#: KEYS: active, stream, delayed, tick. ARGV: jobId, activeTtl, due (0 = now), tickTtl (0 = no
#: tick check), fields…  Returns {outcome, jobId}: outcome enqueued | coalesced | duplicate.
#: The tick check, the coalescing check and the XADD/ZADD happen in one step, so several
#: schedulers enqueue a (provider, user, tick) once.
ENQUEUE = """
if ARGV[4] ~= '0' then
  if not redis.call('SET', KEYS[4], ARGV[1], 'NX', 'EX', ARGV[4]) then
    return {'duplicate', ''}
  end
end
local current = redis.call('GET', KEYS[1])
if current then
  return {'coalesced', current}
end
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
if tonumber(ARGV[3]) > 0 then
  redis.call('ZADD', KEYS[3], ARGV[3], cjson.encode(fields))
else
  redis.call('XADD', KEYS[2], '*', unpack(fields))
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return {'enqueued', ARGV[1]}
"""

#: KEYS: stream, active. ARGV: group, entryId, jobId. Acknowledge a finished job and clear the
#: pair's coalescing marker if it is still this job's.
ACK = """
local n = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
end
return n
"""

#: KEYS: stream, delayed, active. ARGV: group, entryId, due (<= 0 = now), jobId, activeTtl,
#: fields…  Put a job back (now, or in the delayed set until `due`) and acknowledge the old
#: entry in one step: a retry is never lost nor doubled.
RESCHEDULE = """
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
if tonumber(ARGV[3]) > 0 then
  redis.call('ZADD', KEYS[2], ARGV[3], cjson.encode(fields))
else
  redis.call('XADD', KEYS[1], '*', unpack(fields))
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if ARGV[4] ~= '' and redis.call('GET', KEYS[3]) == ARGV[4] then
  redis.call('EXPIRE', KEYS[3], ARGV[5])
end
return 1
"""

#: KEYS: stream, dead, active. ARGV: group, entryId, jobId, fields…  Dead-letter and acknowledge
#: in one step.
DEAD_LETTER = """
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] ~= '' and redis.call('GET', KEYS[3]) == ARGV[3] then
  redis.call('DEL', KEYS[3])
end
return id
"""

#: KEYS: delayed, stream. ARGV: now (epoch seconds), limit. Move due jobs onto the stream.
PROMOTE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', unpack(cjson.decode(member)))
  redis.call('ZREM', KEYS[1], member)
end
return #due
"""

#: KEYS: dead, stream, active. ARGV: deadId, jobId ('' = not a valid job: no marker), activeTtl,
#: fields…  Move one dead letter back onto the stream; returns 0 when it was already gone.
REQUEUE_DEAD = """
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then
  return 0
end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('XDEL', KEYS[1], ARGV[1])
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[3], ARGV[2], 'NX', 'EX', ARGV[3])
end
return 1
"""

#: KEYS: lock. ARGV: token, ttlMs. Returns 1 when taken, else the remaining ttl in ms (negative).
LOCK_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return -redis.call('PTTL', KEYS[1])
"""

#: KEYS: lock. ARGV: token, ttlMs. 1 when still ours and extended, 0 when lost.
LOCK_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

#: KEYS: lock. ARGV: token. Compare-and-delete.
LOCK_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

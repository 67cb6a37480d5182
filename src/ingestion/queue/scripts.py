"""The Lua scripts of the Redis queue: each one is a step that must happen atomically.

Field lists travel as flat `k1, v1, k2, v2, …` ARGV tails; delayed jobs are stored in the
delayed sorted set as the JSON array of that flat list (unique: it carries `enqueuedAt`).
"""

from __future__ import annotations

__all__ = [
    "ACK",
    "BEGIN",
    "DEAD_LETTER",
    "ENQUEUE",
    "ENQUEUE_TICKS",
    "LOCK_ACQUIRE",
    "LOCK_RELEASE",
    "LOCK_RENEW",
    "PROMOTE",
    "REQUEUE_DEAD",
    "RESCHEDULE",
]

#: KEYS: active, stream, delayed, tick, widen, running. ARGV: jobId, activeTtl, due (0 = now),
#: tickTtl (0 = no tick check), widenTtl, n, n widening flags, fields…
#: Returns {outcome, jobId, widening}: outcome enqueued | coalesced | duplicate; widening (for a
#: coalesced job with flags) merged | follow-up | covered, else ''.
#: The tick check, the coalescing check, the record of the widening flags and the XADD/ZADD
#: happen in one step, so several schedulers enqueue a (provider, user, tick) once and a
#: widening request is either taken by the job's start (BEGIN) or seen by its ACK.
ENQUEUE = """
if ARGV[4] ~= '0' then
  if not redis.call('SET', KEYS[4], ARGV[1], 'NX', 'EX', ARGV[4]) then
    return {'duplicate', '', ''}
  end
end
local nflags = tonumber(ARGV[6])
local current = redis.call('GET', KEYS[1])
if current then
  if nflags == 0 then
    return {'coalesced', current, ''}
  end
  local widening = 'merged'
  if redis.call('HGET', KEYS[6], 'job') == current then
    widening = 'covered'
    for i = 7, 6 + nflags do
      if redis.call('HGET', KEYS[6], ARGV[i]) ~= '1' then
        widening = 'follow-up'
      end
    end
  end
  if widening ~= 'covered' then
    for i = 7, 6 + nflags do
      redis.call('HSET', KEYS[5], ARGV[i], '1')
    end
    redis.call('EXPIRE', KEYS[5], ARGV[5])
  end
  return {'coalesced', current, widening}
end
local fields = {}
for i = 7 + nflags, #ARGV do fields[#fields + 1] = ARGV[i] end
if tonumber(ARGV[3]) > 0 then
  redis.call('ZADD', KEYS[3], ARGV[3], cjson.encode(fields))
else
  redis.call('XADD', KEYS[2], '*', unpack(fields))
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return {'enqueued', ARGV[1], ''}
"""

#: The scheduler's batch form of ENQUEUE for plain jobs (no widening options): one call per
#: page of a tick, each job still checked and added atomically (a script runs whole).
#: KEYS: stream, delayed, then per job: its pair's active marker and its tick key.
#: ARGV: activeTtl, tickTtl, then per job: jobId, due (0 = now), its fields as a JSON array of
#: the flat `k1, v1, …` list (the delayed set's member format, unique: it carries `jobId`).
#: Returns one outcome per job: enqueued | coalesced | duplicate, as ENQUEUE decides them.
ENQUEUE_TICKS = """
local outcomes = {}
for i = 1, (#KEYS - 2) / 2 do
  local active, tick = KEYS[1 + 2 * i], KEYS[2 + 2 * i]
  local job_id, due, member = ARGV[3 * i], ARGV[3 * i + 1], ARGV[3 * i + 2]
  if not redis.call('SET', tick, job_id, 'NX', 'EX', ARGV[2]) then
    outcomes[i] = 'duplicate'
  elseif redis.call('EXISTS', active) == 1 then
    outcomes[i] = 'coalesced'
  else
    if tonumber(due) > 0 then
      redis.call('ZADD', KEYS[2], due, member)
    else
      redis.call('XADD', KEYS[1], '*', unpack(cjson.decode(member)))
    end
    redis.call('SET', active, job_id, 'EX', ARGV[1])
    outcomes[i] = 'enqueued'
  end
end
return outcomes
"""

#: KEYS: running, widen, syncLock. ARGV: jobId, runningTtl, lockToken, lockTtlMs, the job's own
#: widening flags…
#: A job starts: it becomes the pair's running job and takes every widening flag recorded for
#: the pair; in the same step it tries the pair's sync lock (`LOCK_ACQUIRE`). Returns
#: {all the flags it runs with (a reclaimed job keeps those it took before), 1 when the lock
#: was taken, else its remaining ttl in ms (negative)}.
BEGIN = """
if redis.call('HGET', KEYS[1], 'job') ~= ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'job', ARGV[1])
end
for i = 5, #ARGV do
  redis.call('HSET', KEYS[1], ARGV[i], '1')
end
for _, flag in ipairs(redis.call('HKEYS', KEYS[2])) do
  if flag ~= 'rerun' then  -- satisfied by this run starting; never covers a later request
    redis.call('HSET', KEYS[1], flag, '1')
  end
end
redis.call('DEL', KEYS[2])
redis.call('EXPIRE', KEYS[1], ARGV[2])
local flags = {}
for _, flag in ipairs(redis.call('HKEYS', KEYS[1])) do
  if flag ~= 'job' then
    flags[#flags + 1] = flag
  end
end
local taken = 1
if not redis.call('SET', KEYS[3], ARGV[3], 'NX', 'PX', ARGV[4]) then
  taken = -redis.call('PTTL', KEYS[3])
end
return {flags, taken}
"""

#: KEYS: stream, active, widen, running, syncLock. ARGV: group, entryId, jobId, followUpJobId,
#: type, userId, enqueuedAt, activeTtl, lockToken ('' = the job holds no lock). Acknowledge a
#: finished job and release the sync lock it took at its start (`LOCK_RELEASE`). If it still
#: holds the pair's coalescing marker: with widening flags recorded while it ran, enqueue one
#: follow-up job with them (the marker passes to it); otherwise clear the marker.
#: Returns {acked, followUpJobId|''}.
ACK = """
if ARGV[9] ~= '' and redis.call('GET', KEYS[5]) == ARGV[9] then
  redis.call('DEL', KEYS[5])
end
local n = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] == '' then
  return {n, ''}
end
if redis.call('HGET', KEYS[4], 'job') == ARGV[3] then
  redis.call('DEL', KEYS[4])
end
if redis.call('GET', KEYS[2]) ~= ARGV[3] then
  return {n, ''}
end
local flags = redis.call('HKEYS', KEYS[3])
if #flags == 0 then
  redis.call('DEL', KEYS[2])
  return {n, ''}
end
local options = {}
for _, flag in ipairs(flags) do
  if flag ~= 'rerun' then  -- a plain follow-up run: no option for it
    options[flag] = true
  end
end
local payload = cjson.encode({userId = ARGV[6], options = options})
redis.call('XADD', KEYS[1], '*', 'type', ARGV[5], 'payload', payload, 'attempt', '1',
  'enqueuedAt', ARGV[7], 'jobId', ARGV[4])
redis.call('DEL', KEYS[3])
redis.call('SET', KEYS[2], ARGV[4], 'EX', ARGV[8])
return {n, ARGV[4]}
"""

#: Lua: a job that did not complete stops being the pair's running job; the widening flags it
#: had taken go back to the widen hash, so its next run (or the pair's next job) takes them again.
_GIVE_BACK = """
local function give_back(running, widen, job_id, widen_ttl)
  if job_id == '' or redis.call('HGET', running, 'job') ~= job_id then
    return
  end
  local flags = redis.call('HKEYS', running)
  local given = 0
  for _, flag in ipairs(flags) do
    if flag ~= 'job' then
      redis.call('HSET', widen, flag, '1')
      given = given + 1
    end
  end
  if given > 0 then
    redis.call('EXPIRE', widen, widen_ttl)
  end
  redis.call('DEL', running)
end
"""

#: KEYS: stream, delayed, active, running, widen. ARGV: group, entryId, due (<= 0 = now), jobId,
#: activeTtl, widenTtl, fields…  Put a job back (now, or in the delayed set until `due`) and
#: acknowledge the old entry in one step: a retry is never lost nor doubled. The job is no
#: longer running; the widening flags it took go back to the widen hash (see `_GIVE_BACK`).
RESCHEDULE = (
    _GIVE_BACK
    + """
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
if tonumber(ARGV[3]) > 0 then
  redis.call('ZADD', KEYS[2], ARGV[3], cjson.encode(fields))
else
  redis.call('XADD', KEYS[1], '*', unpack(fields))
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if ARGV[4] ~= '' and redis.call('GET', KEYS[3]) == ARGV[4] then
  redis.call('EXPIRE', KEYS[3], ARGV[5])
end
give_back(KEYS[4], KEYS[5], ARGV[4], ARGV[6])
return 1
"""
)

#: KEYS: stream, dead, active, running, widen, deadIndex. ARGV: group, entryId, jobId, widenTtl,
#: maxEntries, minId (oldest dead letter kept), indexTtl, fields…
#: Dead-letter and acknowledge in one step. The widening flags the job took, and those recorded
#: while it ran, stay in the widen hash for the pair's next job: a full sync asked for is
#: dropped only once a run with it completed. A previous dead letter of the same (provider,
#: user, error) is replaced and its `count` carried up; the stream is trimmed by length and age.
DEAD_LETTER = (
    _GIVE_BACK
    + """
local fields = {}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
local count = 1
local previous = redis.call('GET', KEYS[6])
if previous then
  local old = redis.call('XRANGE', KEYS[2], previous, previous)
  if #old > 0 then
    local old_count = 1
    local old_fields = old[1][2]
    for i = 1, #old_fields, 2 do
      if old_fields[i] == 'count' then old_count = tonumber(old_fields[i + 1]) or 1 end
    end
    count = old_count + 1
    redis.call('XDEL', KEYS[2], previous)
  end
end
fields[#fields + 1] = 'count'
fields[#fields + 1] = tostring(count)
local id = redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[5], '*', unpack(fields))
redis.call('XTRIM', KEYS[2], 'MINID', ARGV[6])
redis.call('SET', KEYS[6], id, 'EX', ARGV[7])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] ~= '' and redis.call('GET', KEYS[3]) == ARGV[3] then
  redis.call('DEL', KEYS[3])
end
give_back(KEYS[4], KEYS[5], ARGV[3], ARGV[4])
return id
"""
)

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

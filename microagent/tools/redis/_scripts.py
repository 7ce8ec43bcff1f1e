"""Lua scripts of the Redis broker: each settles a message atomically.

A retry or a dead letter writes the new copy and acknowledges the old one in
one script, so a crash in between can give a duplicate, never a loss.
Stream entries carry the body in field ``b``, the message id in ``i``, the
headers in ``h`` and, after the first attempt, the attempt count in ``a``
(``microagent.tools.redis._wire``); every copy a script writes keeps ``i``
and ``h``, and gives an entry written before ids existed its entry id as ``i``.
"""
from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import NoScriptError

__all__ = ['ACK', 'ADD_MANY', 'CLAIM_DEAD', 'DEAD_LETTER', 'FETCH', 'GIVE_BACK', 'PROMOTE', 'QUEUE_LENGTH',
           'RELEASE', 'RETRY', 'Lua']


class Lua:
    """A script run with EVALSHA, run with EVAL (which loads it) on a NOSCRIPT.

    *execute* runs one command: ``client.execute_command`` or ``RedisLane.execute``.

    Not run: needs a Redis server.
    >>> await RETRY.run(client.execute_command, [stream, delayed], [group, entry_id, 1000, member])  # doctest: +SKIP
    """

    __slots__ = ('sha', 'text')

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    async def run(self, execute: Callable[..., Awaitable[Any]], keys: list[Any], args: list[Any]) -> Any:
        try:
            return await execute('EVALSHA', self.sha, len(keys), *keys, *args)
        except NoScriptError:
            # EVAL runs it where its keys live and caches it there. A SCRIPT LOAD may not reach that node: on
            # a cluster just after a failover, redis-py 5 loads it on the masters it knew, not the new one.
            return await execute('EVAL', self.text, len(keys), *keys, *args)


_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# The settling scripts (RETRY, DEAD_LETTER, RELEASE) act only while the entry is still pending (XACK
# returns 1): running one twice changes nothing. The ack lane runs a command once more after a connection
# error (a reply lost to a reset may mean it ran), so this is what keeps a settle from adding a second copy.

# KEYS: stream, delayed zset. ARGV: group, id, delay ms, member (``_wire.retry_member``).
# The due time is the server's clock, so producers with skewed clocks agree.
RETRY = Lua(_NOW_MS + """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[4])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
""")

# KEYS: stream, delayed zset. ARGV: how many to move at most.
# Moves due retries back into the stream; returns ms until the next one is due, -1 if none. Members are
# "m<attempt>:<entry id>:<id len>:<headers len>:<id><headers><body>", or "<attempt>:<entry id>:<body>"
# when written before ids existed.
PROMOTE = Lua(_NOW_MS + """
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, m in ipairs(due) do
  local i = string.find(m, ':', 1, true)
  local j = string.find(m, ':', i + 1, true)
  if string.sub(m, 1, 1) == 'm' then
    local k = string.find(m, ':', j + 1, true)
    local l = string.find(m, ':', k + 1, true)
    local id_end = l + tonumber(string.sub(m, j + 1, k - 1))
    local h_end = id_end + tonumber(string.sub(m, k + 1, l - 1))
    local f = {'b', string.sub(m, h_end + 1), 'a', string.sub(m, 2, i - 1), 'i', string.sub(m, l + 1, id_end)}
    if h_end > id_end then f[7] = 'h'; f[8] = string.sub(m, id_end + 1, h_end) end
    redis.call('XADD', KEYS[1], '*', unpack(f))
  else
    redis.call('XADD', KEYS[1], '*', 'b', string.sub(m, j + 1), 'a', string.sub(m, 1, i - 1),
               'i', string.sub(m, i + 1, j - 1))
  end
  redis.call('ZREM', KEYS[2], m)
end
if #due >= tonumber(ARGV[1]) then return 0 end
local nxt = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if #nxt == 0 then return -1 end
return math.max(0, tonumber(nxt[2]) - now)
""")

# KEYS: streams (one per message, repeated for a batch). ARGV: headers ('' for none), then id and body of
# each message. One command, one reply for a whole batch.
ADD_MANY = Lua("""
local h = ARGV[1]
local n = 0
for i = 2, #ARGV, 2 do
  n = n + 1
  if h == '' then
    redis.call('XADD', KEYS[n], '*', 'b', ARGV[i + 1], 'i', ARGV[i])
  else
    redis.call('XADD', KEYS[n], '*', 'b', ARGV[i + 1], 'i', ARGV[i], 'h', h)
  end
end
return n
""")

# KEYS: stream. ARGV: group, consumer, count. Non-blocking XREADGROUP '>' for a backlog, the batch packed
# into one string ("<entry id> <attempt> <body len> <id len> <headers len>\n<body><id><headers>" per entry,
# ``_wire.unpack``): one reply element instead of many per entry.
FETCH = Lua("""
local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], '>')
if not r then return false end
local out = {}
for _, e in ipairs(r[1][2]) do
  local f, body, attempt, mid, h = e[2], '', '1', '', ''
  for i = 1, #f, 2 do
    local k = f[i]
    if k == 'b' then body = f[i + 1] elseif k == 'a' then attempt = f[i + 1]
    elseif k == 'i' then mid = f[i + 1] elseif k == 'h' then h = f[i + 1] end
  end
  out[#out + 1] = e[1] .. ' ' .. attempt .. ' ' .. #body .. ' ' .. #mid .. ' ' .. #h .. string.char(10)
  out[#out + 1] = body .. mid .. h
end
return table.concat(out)
""")

# KEYS: stream. ARGV: group, ids... Acknowledged entries are deleted: the stream keeps only live work.
ACK = Lua("""
local group = ARGV[1]
for i = 2, #ARGV, 500 do
  local last = math.min(i + 499, #ARGV)
  redis.call('XACK', KEYS[1], group, unpack(ARGV, i, last))
  redis.call('XDEL', KEYS[1], unpack(ARGV, i, last))
end
return #ARGV - 1
""")

# KEYS: stream, dead-letter stream. ARGV: group, entry id, body, error, attempts, message id, headers ('': none).
DEAD_LETTER = Lua("""
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
if ARGV[7] == '' then
  redis.call('XADD', KEYS[2], '*', 'b', ARGV[3], 'e', ARGV[4], 'a', ARGV[5], 'i', ARGV[6])
else
  redis.call('XADD', KEYS[2], '*', 'b', ARGV[3], 'e', ARGV[4], 'a', ARGV[5], 'i', ARGV[6], 'h', ARGV[7])
end
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
""")

# The fields of entry *e* without its attempt, with its entry id as message id if it has none (Lua text
# shared by the scripts that copy entries).
_COPY = """
local function copy(e)
  local f, out, attempt, has_id = e[2], {}, 1, false
  for i = 1, #f, 2 do
    if f[i] == 'a' then
      attempt = tonumber(f[i + 1]) or 1
    else
      out[#out + 1] = f[i]
      out[#out + 1] = f[i + 1]
      if f[i] == 'i' then has_id = true end
    end
  end
  if not has_id then
    out[#out + 1] = 'i'
    out[#out + 1] = e[1]
  end
  return out, attempt
end
"""

# KEYS: stream, dead-letter stream. ARGV: group, dead consumer, max attempts, count.
# The entries a dead consumer held come back as fresh copies with the attempt counted (a consumer reads
# no more than its free slots, so every entry it held was being handled): a message that kills its
# consumer process ends in the dead-letter stream after max attempts, like any failure.
CLAIM_DEAD = Lua(_COPY + """
local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', tonumber(ARGV[4]), ARGV[2])
if type(p) ~= 'table' or p.err then return 0 end
for _, e in ipairs(p) do
  local r = redis.call('XRANGE', KEYS[1], e[1], e[1])
  if #r > 0 then
    local f, attempt = copy(r[1])
    if attempt >= tonumber(ARGV[3]) then
      f[#f + 1] = 'e'
      f[#f + 1] = 'consumer died while handling it'
      f[#f + 1] = 'a'
      f[#f + 1] = attempt
      redis.call('XADD', KEYS[2], '*', unpack(f))
    else
      f[#f + 1] = 'a'
      f[#f + 1] = attempt + 1
      redis.call('XADD', KEYS[1], '*', unpack(f))
    end
  end
  redis.call('XACK', KEYS[1], ARGV[1], e[1])
  redis.call('XDEL', KEYS[1], e[1])
end
return #p
""")

# KEYS: stream. ARGV: group, entry id, body, attempt, message id, headers ('': none). A fresh copy, readable
# by any consumer at once.
RELEASE = Lua("""
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
if ARGV[6] == '' then
  redis.call('XADD', KEYS[1], '*', 'b', ARGV[3], 'a', ARGV[4], 'i', ARGV[5])
else
  redis.call('XADD', KEYS[1], '*', 'b', ARGV[3], 'a', ARGV[4], 'i', ARGV[5], 'h', ARGV[6])
end
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
""")

# KEYS: stream. ARGV: group, consumer, count.
# Gives back what a stopping consumer still owns (reads cut off mid-flight) as fresh copies.
GIVE_BACK = Lua(_COPY + """
local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', tonumber(ARGV[3]), ARGV[2])
if type(p) ~= 'table' or p.err then return 0 end
for _, e in ipairs(p) do
  local r = redis.call('XRANGE', KEYS[1], e[1], e[1])
  if #r > 0 then
    local f, attempt = copy(r[1])
    if attempt > 1 then
      f[#f + 1] = 'a'
      f[#f + 1] = attempt
    end
    redis.call('XADD', KEYS[1], '*', unpack(f))
  end
  redis.call('XACK', KEYS[1], ARGV[1], e[1])
  redis.call('XDEL', KEYS[1], e[1])
end
return #p
""")

# KEYS: stream, delayed zset, and optionally the microagent 1.9 list and its draining list. ARGV: group.
# Acked entries are deleted, so the stream holds waiting + pending ones: waiting = XLEN - pending.
QUEUE_LENGTH = Lua("""
local n = redis.call('XLEN', KEYS[1])
local p = redis.pcall('XPENDING', KEYS[1], ARGV[1])
if type(p) == 'table' and not p.err then n = n - p[1] end
for i = 3, #KEYS do
  if redis.call('TYPE', KEYS[i])['ok'] == 'list' then n = n + redis.call('LLEN', KEYS[i]) end
end
return n + redis.call('ZCARD', KEYS[2])
""")

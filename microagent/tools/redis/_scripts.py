"""Lua scripts of the Redis broker: each settles a message atomically.

A retry or a dead letter writes the new copy and acknowledges the old one in
one script, so a crash in between can give a duplicate, never a loss.
Stream entries carry the body in field ``b`` and, after the first attempt,
the attempt count in ``a``.
"""
from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import NoScriptError

__all__ = ['ACK', 'ADD_MANY', 'CLAIM_DEAD', 'DEAD_LETTER', 'FETCH', 'GIVE_BACK', 'PROMOTE', 'QUEUE_LENGTH',
           'RELEASE', 'RETRY', 'Lua']


class Lua:
    """A script run with EVALSHA, loaded on the first NOSCRIPT.

    *execute* runs one command: ``client.execute_command`` or ``Lane.execute``.

    >>> await RETRY.run(client.execute_command, [stream, delayed], [group, entry_id, 1000, member])  # doctest: +SKIP
    """

    __slots__ = ('sha', 'text')

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    async def load(self, execute: Callable[..., Awaitable[Any]]) -> None:
        await execute('SCRIPT', 'LOAD', self.text)

    async def run(self, execute: Callable[..., Awaitable[Any]], keys: list[Any], args: list[Any]) -> Any:
        try:
            return await execute('EVALSHA', self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await execute('SCRIPT', 'LOAD', self.text)
            return await execute('EVALSHA', self.sha, len(keys), *keys, *args)


_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# The settling scripts (RETRY, DEAD_LETTER, RELEASE) act only while the entry is still pending (XACK
# returns 1): running one twice changes nothing. The ack lane runs a command once more after a connection
# error (a reply lost to a reset may mean it ran), so this is what keeps a settle from adding a second copy.

# KEYS: stream, delayed zset. ARGV: group, id, delay ms, member ("attempt:id:body").
# The due time is the server's clock, so producers with skewed clocks agree.
RETRY = Lua(_NOW_MS + """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[4])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
""")

# KEYS: stream, delayed zset. ARGV: how many to move at most.
# Moves due retries back into the stream; returns ms until the next one is due, -1 if none.
PROMOTE = Lua(_NOW_MS + """
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, m in ipairs(due) do
  local i = string.find(m, ':', 1, true)
  local j = string.find(m, ':', i + 1, true)
  redis.call('XADD', KEYS[1], '*', 'b', string.sub(m, j + 1), 'a', string.sub(m, 1, i - 1))
  redis.call('ZREM', KEYS[2], m)
end
if #due >= tonumber(ARGV[1]) then return 0 end
local nxt = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if #nxt == 0 then return -1 end
return math.max(0, tonumber(nxt[2]) - now)
""")

# KEYS: streams (one per body, repeated for a batch). ARGV: bodies. One command, one reply for a whole batch.
ADD_MANY = Lua("""
for i = 1, #ARGV do
  redis.call('XADD', KEYS[i], '*', 'b', ARGV[i])
end
return #ARGV
""")

# KEYS: stream. ARGV: group, consumer, count. Non-blocking XREADGROUP '>' for a backlog, the batch packed
# into one string ("<id> <attempt> <length>\n<body>" per entry): one reply element instead of five per entry.
FETCH = Lua("""
local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], '>')
if not r then return false end
local out = {}
for _, e in ipairs(r[1][2]) do
  local f, body, attempt = e[2], '', '1'
  for i = 1, #f, 2 do
    if f[i] == 'b' then body = f[i + 1] elseif f[i] == 'a' then attempt = f[i + 1] end
  end
  out[#out + 1] = e[1] .. ' ' .. attempt .. ' ' .. #body .. string.char(10) .. body
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

# KEYS: stream, dead-letter stream. ARGV: group, id, body, error, attempts.
DEAD_LETTER = Lua("""
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', 'b', ARGV[3], 'e', ARGV[4], 'a', ARGV[5])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
""")

# KEYS: stream, dead-letter stream. ARGV: group, dead consumer, max attempts, count.
# The entries a dead consumer held come back as fresh copies with the attempt counted (a consumer reads
# no more than its free slots, so every entry it held was being handled): a message that kills its
# consumer process ends in the dead-letter stream after max attempts, like any failure.
CLAIM_DEAD = Lua("""
local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', tonumber(ARGV[4]), ARGV[2])
if type(p) ~= 'table' or p.err then return 0 end
for _, e in ipairs(p) do
  local r = redis.call('XRANGE', KEYS[1], e[1], e[1])
  if #r > 0 then
    local f, body, attempt = r[1][2], '', 1
    for i = 1, #f, 2 do
      if f[i] == 'b' then body = f[i + 1] elseif f[i] == 'a' then attempt = tonumber(f[i + 1]) end
    end
    if attempt >= tonumber(ARGV[3]) then
      redis.call('XADD', KEYS[2], '*', 'b', body, 'e', 'consumer died while handling it', 'a', attempt)
    else
      redis.call('XADD', KEYS[1], '*', 'b', body, 'a', attempt + 1)
    end
  end
  redis.call('XACK', KEYS[1], ARGV[1], e[1])
  redis.call('XDEL', KEYS[1], e[1])
end
return #p
""")

# KEYS: stream. ARGV: group, id, body, attempt. A fresh copy, readable by any consumer at once.
RELEASE = Lua("""
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XADD', KEYS[1], '*', 'b', ARGV[3], 'a', ARGV[4])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
""")

# KEYS: stream. ARGV: group, consumer, count.
# Gives back what a stopping consumer still owns (reads cut off mid-flight) as fresh copies.
GIVE_BACK = Lua("""
local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', tonumber(ARGV[3]), ARGV[2])
if type(p) ~= 'table' or p.err then return 0 end
for _, e in ipairs(p) do
  local r = redis.call('XRANGE', KEYS[1], e[1], e[1])
  if #r > 0 then redis.call('XADD', KEYS[1], '*', unpack(r[1][2])) end
  redis.call('XACK', KEYS[1], ARGV[1], e[1])
  redis.call('XDEL', KEYS[1], e[1])
end
return #p
""")

# KEYS: stream, delayed zset. ARGV: group.
# Acked entries are deleted, so the stream holds waiting + pending ones: waiting = XLEN - pending.
QUEUE_LENGTH = Lua("""
local n = redis.call('XLEN', KEYS[1])
local p = redis.pcall('XPENDING', KEYS[1], ARGV[1])
if type(p) == 'table' and not p.err then n = n - p[1] end
return n + redis.call('ZCARD', KEYS[2])
""")

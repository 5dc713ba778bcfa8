"""The Lua scripts of the snapshot registry (:mod:`feature_store.snapshots`): each is one atomic step in Redis.

Kept apart so the registry module reads as Python; each script's comment says its keys and arguments.
"""

from __future__ import annotations

__all__ = ["MOVE_POINTER", "NEXT_VERSION"]

#: Moves ``current`` only when the manifest exists and carries the expected checksum, and (for a
#: publish, not a rollback) only forward, so a slow concurrent publisher cannot move it back;
#: then announces the manifest on pub/sub. The caller read the pointer first (ARGV[6], "" for none)
#: and judged it (ARGV[7]: "1" when it names a readable kept version); the script moves it only if
#: it is still that value (else ``RACED``: the caller reads and judges again). A pointer judged bad
#: (garbage, a version without a manifest, an unreadable manifest) counts as no current: it never
#: blocks a publish, and each such heal is counted in KEYS[4].
#: KEYS: current, manifest, current_event, bad_pointer_heals. ARGV: version, sha256, channel, message,
#: event, seen pointer, seen pointer is good.
MOVE_POINTER = """
local manifest = redis.call('GET', KEYS[2])
if not manifest then return redis.error_reply('NOMANIFEST version ' .. ARGV[1] .. ' has no manifest') end
local doc = cjson.decode(manifest)
if doc['sha256'] ~= ARGV[2] then return redis.error_reply('BADSHA manifest checksum changed') end
local previous = redis.call('GET', KEYS[1])
if (previous or '') ~= ARGV[6] then return redis.error_reply('RACED current changed while publishing') end
local good = previous and ARGV[7] == '1'
if ARGV[5] == 'publish' and good and tonumber(previous) > tonumber(ARGV[1]) then
  return redis.error_reply('STALE current is already v' .. previous)
end
if previous and not good then redis.call('INCR', KEYS[4]) end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[3], ARGV[5])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return previous
"""

#: Allocates the next version number: INCR of ``seq``, but never at or below the newest kept version
#: (a lost or garbage ``seq`` would otherwise reuse a number and overwrite a kept snapshot).
#: KEYS: seq, versions.
NEXT_VERSION = """
local n = redis.pcall('INCR', KEYS[1])
local top = redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local floor = 0
if top[2] then floor = tonumber(top[2]) end
if type(n) ~= 'number' or n <= floor then
  n = floor + 1
  redis.call('SET', KEYS[1], n)
end
return n
"""

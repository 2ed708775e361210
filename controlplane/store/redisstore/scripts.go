package redisstore

import "github.com/redis/go-redis/v9"

// Lua scripts. Results: 0 ok, 1 not found, 2 already exists, 3 conflict (see resOK...). Each
// publishes its change on crs:changes after it wrote, so nothing is announced for a failed call.

// createKey: KEYS record, hash index, ids set. ARGV id, pb, hash, change.
var createKeyScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 2 end
if redis.call('SETNX', KEYS[2], ARGV[1]) == 0 then return 2 end
redis.call('HSET', KEYS[1], 'pb', ARGV[2], 'hash', ARGV[3])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('PUBLISH', 'crs:changes', ARGV[4])
return 0
`)

// updateKey: KEYS record, new hash index. ARGV id, pb, new hash, change, hash index prefix.
var updateKeyScript = redis.NewScript(`
local old = redis.call('HGET', KEYS[1], 'hash')
if not old then return 1 end
if old ~= ARGV[3] then
  if redis.call('SETNX', KEYS[2], ARGV[1]) == 0 then return 2 end
  redis.call('DEL', ARGV[5] .. old)
end
redis.call('HSET', KEYS[1], 'pb', ARGV[2], 'hash', ARGV[3])
redis.call('PUBLISH', 'crs:changes', ARGV[4])
return 0
`)

// deleteKey: KEYS record, ids set. ARGV id, change, hash index prefix.
var deleteKeyScript = redis.NewScript(`
local old = redis.call('HGET', KEYS[1], 'hash')
if not old then return 1 end
redis.call('DEL', KEYS[1], ARGV[3] .. old)
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', 'crs:changes', ARGV[2])
return 0
`)

// createAccount: KEYS record, ids set. ARGV id, pb, sealed, gen, has status ("1"/"0"), status,
// change.
var createAccountScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 2 end
redis.call('HSET', KEYS[1], 'pb', ARGV[2], 'sealed', ARGV[3], 'gen', ARGV[4])
if ARGV[5] == '1' then redis.call('HSET', KEYS[1], 'status', ARGV[6]) end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PUBLISH', 'crs:changes', ARGV[7])
return 0
`)

// setField: KEYS record. ARGV field, value, change. Writes one field of an existing hash.
var setFieldScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', 'crs:changes', ARGV[3])
return 0
`)

// delField: KEYS record. ARGV field, change. Deletes one field of an existing hash.
var delFieldScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 1 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('PUBLISH', 'crs:changes', ARGV[2])
return 0
`)

// swapCredentials: KEYS record. ARGV want gen, new gen, sealed, change. Generations are compared
// as their canonical decimal strings.
var swapCredentialsScript = redis.NewScript(`
local g = redis.call('HGET', KEYS[1], 'gen')
if not g then return 1 end
if g ~= ARGV[1] then return 3 end
redis.call('HSET', KEYS[1], 'sealed', ARGV[3], 'gen', ARGV[2])
redis.call('PUBLISH', 'crs:changes', ARGV[4])
return 0
`)

// deleteRecord: KEYS record, ids set. ARGV id, change.
var deleteRecordScript = redis.NewScript(`
if redis.call('DEL', KEYS[1]) == 0 then return 1 end
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', 'crs:changes', ARGV[2])
return 0
`)

// putRecord: KEYS record, ids set. ARGV id, value, mode ("create" or "update"), change.
var putRecordScript = redis.NewScript(`
local exists = redis.call('EXISTS', KEYS[1]) == 1
if ARGV[3] == 'create' and exists then return 2 end
if ARGV[3] == 'update' and not exists then return 1 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PUBLISH', 'crs:changes', ARGV[4])
return 0
`)

// setAndPublish: KEYS key. ARGV value, change.
var setAndPublishScript = redis.NewScript(`
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PUBLISH', 'crs:changes', ARGV[2])
return 0
`)

// setIfAbsent: KEYS key. ARGV value. Returns the stored value.
var setIfAbsentScript = redis.NewScript(`
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
`)

// bind: KEYS binding. ARGV account, ttl ms, replace ("1"/"0"). Returns {account, created 0/1}.
var bindScript = redis.NewScript(`
if ARGV[3] == '0' then
  local v = redis.call('GET', KEYS[1])
  if v then return {v, 0} end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {ARGV[1], 1}
`)

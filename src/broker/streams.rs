//! History in Redis: one stream and one small hash per history channel, both in the
//! channel's own slot (keys tagged with [`slot_tag`]), written by one Lua script that
//! assigns the next offset, appends, trims, sets the TTL and SPUBLISHes, atomically
//! on the shard that owns the channel.

use std::sync::{Arc, LazyLock};

use redis::Script;

use super::Publication;
use super::subscriber::WirePublication;
use crate::channel::{Channel, UserId};
use crate::slot::{key_slot, slot_tag};

/// KEYS: stream, meta, dedup key. ARGV: channel, data (JSON), from fragment
/// (`,"f":"..."` or empty), max len, ttl ms, a fresh epoch, dedup window ms.
/// Returns {offset, epoch, repeated (0/1)}. The dedup key is the client's
/// idempotency key, or a random one per publish so that a resend of the same
/// command (redis-rs retries after a timeout) is not stored twice.
pub static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local stream, meta = KEYS[1], KEYS[2]
if KEYS[3] then
  local prev = redis.call('GET', KEYS[3])
  if prev then
    local o, e = string.match(prev, '^(%d+):(.*)$')
    if not o then
      -- A value without the epoch: report the channel's current one.
      return {tonumber(prev) or 0, redis.call('HGET', meta, 'epoch') or '', 1}
    end
    return {tonumber(o), e, 1}
  end
end
local epoch = redis.call('HGET', meta, 'epoch')
if (not epoch) or redis.call('EXISTS', stream) == 0 then
  -- First publication, or the history expired or was lost: a new epoch.
  epoch = ARGV[6]
  redis.call('DEL', meta, stream)
  redis.call('HSET', meta, 'epoch', epoch)
end
local offset = redis.call('HINCRBY', meta, 'offset', 1)
local payload = '{"o":' .. offset .. ',"e":"' .. epoch .. '","d":' .. ARGV[2] .. ARGV[3] .. '}'
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XADD', stream, 'MAXLEN', ARGV[4], offset .. '-0', 'p', payload, 't', ms)
redis.call('PEXPIRE', stream, ARGV[5])
redis.call('PEXPIRE', meta, ARGV[5])
if KEYS[3] then redis.call('SET', KEYS[3], offset .. ':' .. epoch, 'PX', ARGV[7]) end
redis.call('SPUBLISH', ARGV[1], payload)
return {offset, epoch, 0}
"#,
    )
});

/// KEYS: stream, meta. ARGV: since ('' for position only), limit, ttl ms.
/// Returns {epoch, top, {payload...}} with entries older than the TTL left out.
pub static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local stream, meta = KEYS[1], KEYS[2]
local epoch = redis.call('HGET', meta, 'epoch') or ''
local top = tonumber(redis.call('HGET', meta, 'offset') or '0')
local out = {}
if ARGV[1] ~= '' then
  local t = redis.call('TIME')
  local cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[3])
  local entries = redis.call('XRANGE', stream, '(' .. ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])
  for _, e in ipairs(entries) do
    local f = e[2]
    if tonumber(f[4]) >= cutoff then table.insert(out, f[2]) end
  end
end
return {epoch, top, out}
"#,
    )
});

/// The stream, meta and idempotency keys of a channel, all in its slot.
pub struct Keys {
    pub stream: String,
    pub meta: String,
    prefix: String,
}

impl Keys {
    pub fn of(channel: &Channel) -> Keys {
        let tag = slot_tag(key_slot(channel.as_str().as_bytes()));
        let prefix = format!("shardcast:{{{tag}}}:{}", channel.as_str());
        Keys {
            stream: format!("{prefix}:s"),
            meta: format!("{prefix}:m"),
            prefix,
        }
    }

    pub fn idempotency(&self, key: &str) -> String {
        format!("{}:i:{key}", self.prefix)
    }

    /// A per-publish dedup key (no client key given).
    pub fn once(&self) -> String {
        format!("{}:r:{:016x}", self.prefix, rand::random::<u64>())
    }
}

/// The `,"f":"<user>"` fragment the publish script splices into the payload.
pub fn from_fragment(from: Option<&UserId>) -> String {
    match from {
        Some(u) => format!(
            ",\"f\":{}",
            serde_json::to_string(u.as_str()).unwrap_or_else(|_| "null".into())
        ),
        None => String::new(),
    }
}

/// Decodes a stored or published history payload.
pub fn decode(channel: &Channel, payload: &[u8]) -> Option<Publication> {
    let wire: WirePublication<'_> = serde_json::from_slice(payload).ok()?;
    Some(Publication {
        channel: channel.clone(),
        data: wire.d.to_owned(),
        from: wire.f.and_then(|f| UserId::parse(f).ok()),
        offset: wire.o,
        epoch: wire.e.map(Arc::from),
        uid: wire.u.unwrap_or(0),
    })
}

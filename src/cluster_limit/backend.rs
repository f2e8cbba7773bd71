//! The shared bucket in Redis: GCRA evaluated atomically by a Lua script (EVALSHA, loaded again
//! on NOSCRIPT after a Redis restart), one key per budget and identity, on one reconnecting
//! connection (`redis::aio::ConnectionManager`, pipelined, shared by every request).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::ClusterLimitError;
use super::lease::Grant;

/// GCRA over a batch. The key holds the theoretical arrival time (TAT) in microseconds of
/// Redis' own clock (`TIME`), so replicas' clocks never matter. Takes as many of `want` tokens
/// as the burst allows (the TAT advances one emission interval per token, and may run at most
/// `burst` intervals ahead of now), returns `{granted, retry_after_us}`; the key expires when
/// the bucket is full again, so idle identities cost Redis nothing.
///
/// KEYS[1] the bucket; ARGV[1] emission interval (µs), ARGV[2] burst, ARGV[3] tokens wanted.
/// `replicate_commands` (Redis 3.2 to 4) lets a script write after reading `TIME`; from Redis 5
/// on that is the default and the call is a no-op.
const GCRA: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local room = math.floor((now + burst * interval - tat) / interval)
local granted = math.min(want, room)
if granted < 1 then
  return {0, tat + interval - burst * interval - now}
end
tat = tat + granted * interval
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
return {granted, 0}
";

/// The Redis side: a client built at start-up (URL and TLS material checked then), connected
/// lazily on the first round trip (ztgate starts while Redis is down, and `ztgate check` never
/// connects).
pub(crate) struct Backend {
    client: redis::Client,
    conn: tokio::sync::OnceCell<ConnectionManager>,
    script: redis::Script,
    /// Bounds one command on the connection (the caller bounds the whole wait too).
    timeout: Duration,
}

impl Backend {
    /// Parses the URL and reads the TLS files. Errors: a malformed URL, an unreadable file.
    pub(crate) fn new(cfg: &super::ClusterLimitConfig) -> Result<Self, ClusterLimitError> {
        let client = if cfg.url.starts_with("rediss://") {
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|source| ClusterLimitError::Read {
                    path: p.to_path_buf(),
                    source,
                })
            };
            let root_cert = cfg.ca.as_deref().map(read).transpose()?;
            let client_tls = match &cfg.client_cert {
                Some((cert, key)) => Some(redis::ClientTlsConfig {
                    client_cert: read(cert)?,
                    client_key: read(key)?,
                }),
                None => None,
            };
            redis::Client::build_with_tls(cfg.url.as_str(), redis::TlsCertificates { client_tls, root_cert })
        } else {
            redis::Client::open(cfg.url.as_str())
        }
        .map_err(|source| ClusterLimitError::Client { source })?;
        Ok(Self {
            client,
            conn: tokio::sync::OnceCell::new(),
            script: redis::Script::new(GCRA),
            timeout: cfg.timeout,
        })
    }

    async fn conn(&self) -> Result<ConnectionManager, redis::RedisError> {
        self.conn
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(self.timeout))
                    // A connect may take longer than one request may wait; it goes on in the
                    // background for the requests after.
                    .set_connection_timeout(Some(self.timeout.max(Duration::from_secs(1))))
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_secs(1));
                ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            })
            .await
            .cloned()
    }

    /// One round trip: up to `want` tokens from bucket `key`.
    pub(crate) async fn take(
        &self,
        key: &str,
        interval_us: u64,
        burst: u32,
        want: u32,
    ) -> Result<Grant, redis::RedisError> {
        let mut conn = self.conn().await?;
        let (granted, retry_us): (i64, i64) = self
            .script
            .key(key)
            .arg(interval_us)
            .arg(burst)
            .arg(want)
            .invoke_async(&mut conn)
            .await?;
        Ok(Grant {
            granted: u32::try_from(granted.clamp(0, i64::from(want))).unwrap_or(0),
            retry_after: Duration::from_micros(u64::try_from(retry_us).unwrap_or(0)),
        })
    }
}

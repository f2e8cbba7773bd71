//! The shared bucket in Redis: GCRA evaluated atomically by a Lua script (EVALSHA, loaded again
//! on NOSCRIPT after a Redis restart), one key per budget and identity, on one reconnecting
//! connection (`redis::aio::ConnectionManager`, pipelined, shared by every request).

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::watch;
use tracing::{info, warn};

use super::ClusterLimitError;
use super::lease::Grant;

/// The longest one connection attempt (TCP, TLS, AUTH) may take, when `timeout` is shorter: a
/// connect may take longer than one request may wait; it goes on in the background.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

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

/// Why a round trip failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TakeError {
    /// Connecting (TCP, TLS, AUTH) failed; the connect task logged it (WARN) with the URL.
    #[error("cannot connect to Redis: {0}")]
    Connect(Arc<str>),
    /// The command failed on a connection (or timed out on it).
    #[error(transparent)]
    Command(#[from] redis::RedisError),
}

/// The connection as connect tasks and round trips see it.
#[derive(Clone)]
enum State {
    /// Not connected, no attempt running (at start, or after a failed attempt: the next round
    /// trip starts another).
    Idle,
    Connecting,
    Up(ConnectionManager),
    /// The last attempt failed with this error (already logged).
    Failed(Arc<str>),
}

/// The Redis side: a client built at start-up (URL and TLS material checked then), connected on
/// the first round trip (ztgate starts while Redis is down, and `ztgate check` never connects).
///
/// Connecting runs in a task of its own, to completion: a request waits for it at most its
/// `timeout`, but the attempt goes on and its error (refused, TLS, authentication) is logged
/// with the URL, instead of being cut off as a timeout. A failed attempt is not retried by
/// itself: the next round trip (at most one per 0.5 s while Redis is down) starts another.
/// Once connected, `ConnectionManager` reconnects after a dropped connection.
pub(crate) struct Backend {
    client: redis::Client,
    state: Arc<watch::Sender<State>>,
    script: redis::Script,
    /// Bounds one command on the connection (the caller bounds the whole wait too).
    timeout: Duration,
    /// The URL without its password, for log lines.
    shown_url: Arc<str>,
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
            state: Arc::new(watch::Sender::new(State::Idle)),
            script: redis::Script::new(GCRA),
            timeout: cfg.timeout,
            shown_url: super::redacted_url(&cfg.url).into(),
        })
    }

    /// The connection, or the error of the attempt this call waited for. Starts an attempt when
    /// none runs and there is no connection. Unbounded: the caller bounds the wait.
    async fn conn(&self) -> Result<ConnectionManager, TakeError> {
        let mut rx = self.state.subscribe();
        let start = self.state.send_if_modified(|s| match s {
            State::Idle | State::Failed(_) => {
                *s = State::Connecting;
                true
            }
            State::Connecting | State::Up(_) => false,
        });
        if start {
            self.spawn_connect();
        }
        loop {
            match &*rx.borrow_and_update() {
                State::Up(c) => return Ok(c.clone()),
                // Only after this call started waiting on an attempt (`start` set it to
                // Connecting, or one was running): an older failure was replaced above.
                State::Failed(e) => return Err(TakeError::Connect(e.clone())),
                State::Idle | State::Connecting => {}
            }
            if rx.changed().await.is_err() {
                return Err(TakeError::Connect("the connect task is gone".into()));
            }
        }
    }

    fn spawn_connect(&self) {
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(self.timeout))
            .set_connection_timeout(Some(self.timeout.max(CONNECT_TIMEOUT)))
            // One attempt: its error is reported (and logged) as it is, not hidden behind
            // retries that outlast every request's timeout. Round trips start the next one.
            .set_number_of_retries(0)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let (client, state, url) = (self.client.clone(), self.state.clone(), self.shown_url.clone());
        tokio::spawn(async move {
            let next = match ConnectionManager::new_with_config(client, config).await {
                Ok(c) => {
                    info!(url = %url, "cluster rate limit: connected to Redis");
                    State::Up(c)
                }
                Err(e) => {
                    warn!(url = %url, error = %e, "cluster rate limit: cannot connect to Redis");
                    State::Failed(e.to_string().into())
                }
            };
            state.send_replace(next);
        });
    }

    /// One round trip: up to `want` tokens from bucket `key`.
    pub(crate) async fn take(&self, key: &str, interval_us: u64, burst: u32, want: u32) -> Result<Grant, TakeError> {
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

    /// The URL without its password (for log lines).
    pub(crate) fn shown_url(&self) -> &str {
        &self.shown_url
    }
}

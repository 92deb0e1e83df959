//! The fleet's shared fast state in Redis: in-flight markers and finished answers by
//! idempotency key, rule invalidations over pub/sub, and the admin API's rate buckets.
//!
//! Redis is a second layer behind the in-process state and in front of Postgres, which
//! stays the source of truth: every movement, its answer and its idempotency record are
//! committed together in the database, and the database alone decides whether money moves.
//! Redis only lets a duplicate that lands on another instance be answered at once (425
//! while the first is in flight, the stored answer once it finished) instead of queueing
//! on a database lock. Every Redis call is bounded by `redis.command_ms_max`; a failure
//! is counted in `authorizer_redis_fallbacks_total{op}`, logged once, and Redis is then
//! skipped (requests go straight to Postgres, as a single instance does) until a ping,
//! tried every `redis.retry_ms`, answers again.
//!
//! Keys (all under `redis.key_prefix`):
//! - `idem:answer:<scope>:<key>`: a finished answer (request hash, status, body), kept
//!   `redis.answers_ttl_secs`; written only for answers committed in the database.
//! - `idem:inflight:<scope>:<key>`: the in-flight marker (`SET NX PX`), value
//!   `<claim id>:<ttl ms>`, expiring after `redis.in_flight_ttl_secs`.
//! - `ratelimit:admin:<token id>`: a token bucket (hash of `tokens`, `ts`).
//! - `reserving:<channel>:<reservation id>`: a reserve of that reservation is being decided
//!   by some instance (`SET NX PX`, for as long as its commit may take); once decided,
//!   `done` for as long again when it committed a hold, else deleted: a capture, cancel or
//!   refund that finds no hold on another instance waits while it is being decided, and
//!   looks again once it is done.
//! - channel `rules`: `card:<card id>` when an admin change touched a card.

use crate::config::RedisSettings;
use crate::inflight::Finished;
use crate::metrics::Metrics;
use crate::rules::RulesCache;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use redis::{Script, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;
use tokio::sync::watch;

/// Atomically: the finished answer if there is one; else claim the key; else who holds it.
const CLAIM: &str = r"
local a = redis.call('GET', KEYS[1])
if a then return {1, a} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0} end
local holder = redis.call('GET', KEYS[2])
if not holder then return {2, '', 0} end
return {2, holder, redis.call('PTTL', KEYS[2])}
";

/// Takes over a marker whose owner never answered, if it is still the one we saw.
const TAKE_OVER: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

/// Stores a durable answer and clears our own marker.
const FINISH: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1
";

/// Clears our own marker (we end without an answer to share).
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Ends our own reserve mark: "done" for a while when it holds (ARGV[2] = 1), else deleted.
const FINISH_MARK: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '1' then redis.call('SET', KEYS[1], 'done', 'PX', ARGV[3]) else redis.call('DEL', KEYS[1]) end
return 1
";

/// The value of a reserve mark whose reserve committed its hold.
const DONE: &str = "done";

/// What the fleet's mark says of a reserve of one reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveMark {
    /// No reserve of it is being decided, nor just committed.
    None,
    /// One is being decided: a hold may come.
    Deciding,
    /// One committed its hold a moment ago: a read before it may have missed it.
    Done,
}

/// Token bucket on Redis' own clock: {allowed (1/0), ms until the next token}.
const TAKE_TOKEN: &str = r"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate / 1000) end
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(math.max(now, ts)))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {allowed, wait}
";

static CLAIM_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(CLAIM));
static TAKE_OVER_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(TAKE_OVER));
static FINISH_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(FINISH));
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE));
static FINISH_MARK_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(FINISH_MARK));
static TAKE_TOKEN_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(TAKE_TOKEN));

/// What Redis says about an idempotency key.
pub enum FleetClaim {
    /// This instance holds the fleet-wide marker: process, then [`Ticket::finish`].
    Owner(Ticket),
    /// Finished earlier (committed in the database): its answer.
    Answer(Finished),
    /// Another instance is processing it right now.
    Busy,
    /// Redis is not configured or not answering: go to the database.
    Unavailable,
}

/// The fleet-wide marker held while processing. Dropped without [`Ticket::finish`] (no
/// durable answer), it releases the marker in the background.
pub struct Ticket {
    link: Arc<Link>,
    scoped_key: String,
    claim_id: String,
    done: bool,
}

impl Ticket {
    /// Shares a durably stored answer with the fleet and clears the marker.
    pub async fn finish(mut self, answer: &Finished) {
        self.done = true;
        let link = self.link.clone();
        let mut value = Vec::with_capacity(34 + answer.body.len());
        value.extend_from_slice(&answer.request_hash);
        value.extend_from_slice(&answer.status.to_be_bytes());
        value.extend_from_slice(&answer.body);
        let (answer_key, marker_key) = link.idem_keys(&self.scoped_key);
        let ttl = link.answers_ttl_ms;
        let claim_id = std::mem::take(&mut self.claim_id);
        let (marker, mine) = (marker_key.clone(), claim_id.clone());
        let stored = link
            .call("idempotency_store", move |mut c| async move {
                FINISH_SCRIPT
                    .key(answer_key)
                    .key(marker_key)
                    .arg(value)
                    .arg(ttl)
                    .arg(claim_id)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await;
        if stored.is_none() {
            // The answer is in the database; the marker must not outlive it.
            link.release_later(marker, mine);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (_, marker_key) = self.link.idem_keys(&self.scoped_key);
        let claim_id = std::mem::take(&mut self.claim_id);
        self.link.release_later(marker_key, claim_id);
    }
}

/// The link to Redis, shared by every worker. Without `redis.url` every operation says
/// [`FleetClaim::Unavailable`] / does nothing, without counting a fallback.
#[derive(Clone, Default)]
pub struct Fleet {
    link: Option<Arc<Link>>,
    /// Runs the connection, the subscriber and their reconnects, apart from the HTTP
    /// workers' event loops; stopped when the last handle is dropped.
    _runtime: Option<Arc<RuntimeHolder>>,
}

struct Link {
    client: redis::Client,
    conn: OnceLock<ConnectionManager>,
    prefix: String,
    command: Duration,
    retry_ms: i64,
    /// Set by a failed call: Redis is skipped until the health check's ping answers.
    down: AtomicBool,
    in_flight_ttl_ms: u64,
    stale_ms: i64,
    answers_ttl_ms: u64,
    instance: String,
    claims: AtomicU64,
    /// False while the rules subscriber is not subscribed.
    subscribed: AtomicBool,
    metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
}

struct RuntimeHolder(Option<tokio::runtime::Runtime>);

impl Drop for RuntimeHolder {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    let _ = getrandom::getrandom(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Fleet {
    /// Marks a reserve of `reservation_id` on `channel` as being decided, for `ttl_ms` (the
    /// longest its commit may end after it came), unless another reserve of it holds the
    /// mark: the other instances' captures, cancels and refunds that find no hold wait for
    /// it. `None`: not marked by this call (no Redis, it failed, or the mark is another's).
    pub async fn mark_reserving(
        &self,
        channel: &str,
        reservation_id: &str,
        ttl_ms: u64,
    ) -> Option<String> {
        let link = self.link.as_ref()?;
        let key = link.reserving_key(channel, reservation_id);
        let token = format!("{}-{}", link.instance, random_hex(8));
        let value = token.clone();
        let set: Option<String> = link
            .call("reserving_mark", move |mut c| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms.max(1))
                    .query_async::<Option<String>>(&mut c)
                    .await
            })
            .await?;
        set.map(|_| token)
    }

    /// Ends this instance's mark `token` once its reserve is decided: `held`, it reads
    /// "done" for `ttl_ms` more (a capture, cancel or refund that read nothing just before
    /// the hold committed looks once again); else it is deleted (no hold will come).
    pub async fn finish_reserving(
        &self,
        channel: &str,
        reservation_id: &str,
        token: String,
        held: bool,
        ttl_ms: u64,
    ) {
        let Some(link) = &self.link else {
            return;
        };
        let key = link.reserving_key(channel, reservation_id);
        link.call("reserving_finish", move |mut c| async move {
            FINISH_MARK_SCRIPT
                .key(key)
                .arg(token)
                .arg(if held { "1" } else { "0" })
                .arg(ttl_ms.max(1))
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await;
    }

    /// The fleet's mark of a reserve of this reservation ([`ReserveMark::None`] without
    /// Redis, or when it fails).
    pub async fn reserving(&self, channel: &str, reservation_id: &str) -> ReserveMark {
        let Some(link) = &self.link else {
            return ReserveMark::None;
        };
        let key = link.reserving_key(channel, reservation_id);
        let value = link
            .call("reserving_read", move |mut c| async move {
                redis::cmd("GET")
                    .arg(key)
                    .query_async::<Option<String>>(&mut c)
                    .await
            })
            .await
            .flatten();
        match value.as_deref() {
            None => ReserveMark::None,
            Some(DONE) => ReserveMark::Done,
            Some(_) => ReserveMark::Deciding,
        }
    }

    /// No Redis: a single instance with in-process state only.
    pub fn none() -> Fleet {
        Fleet::default()
    }

    /// Connects in the background (an instance starts, degraded, while Redis is down) and
    /// starts the rules subscriber, which keeps `rules` live only while it is subscribed.
    pub fn start(
        settings: &RedisSettings,
        metrics: Arc<Metrics>,
        rules: Arc<RulesCache>,
    ) -> anyhow::Result<Fleet> {
        let url = settings.url.expose();
        if url.is_empty() {
            return Ok(Fleet::none());
        }
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("redis.url is not a valid Redis URL: {e}"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("authorizer-redis")
            .enable_all()
            .build()?;
        let (shutdown, _) = watch::channel(false);
        let link = Arc::new(Link {
            client,
            conn: OnceLock::new(),
            prefix: settings.key_prefix.clone(),
            command: Duration::from_millis(settings.command_ms_max),
            retry_ms: i64::try_from(settings.retry_ms).unwrap_or(1000),
            down: AtomicBool::new(false),
            in_flight_ttl_ms: settings.in_flight_ttl_secs.saturating_mul(1000),
            stale_ms: i64::try_from(settings.in_flight_stale_ms).unwrap_or(i64::MAX),
            answers_ttl_ms: settings.answers_ttl_secs.saturating_mul(1000),
            instance: random_hex(6),
            claims: AtomicU64::new(0),
            subscribed: AtomicBool::new(false),
            metrics,
            shutdown,
        });
        rules.set_live(false);
        runtime.spawn(connect(link.clone()));
        runtime.spawn(subscribe(link.clone(), rules));
        Ok(Fleet {
            link: Some(link),
            _runtime: Some(Arc::new(RuntimeHolder(Some(runtime)))),
        })
    }

    pub fn is_configured(&self) -> bool {
        self.link.is_some()
    }

    /// Whether Redis is in use now: commands answer and the rules subscriber is
    /// subscribed (readiness details; false means degraded, not unready).
    pub fn healthy(&self) -> bool {
        self.link.as_ref().is_some_and(|l| {
            l.conn.get().is_some()
                && !l.down.load(Ordering::SeqCst)
                && l.subscribed.load(Ordering::SeqCst)
        })
    }

    /// Stops the background tasks (the connection closes when the last user is done).
    pub fn stop(&self) {
        if let Some(l) = &self.link {
            let _ = l.shutdown.send(true);
        }
    }

    /// Looks up `scoped_key` (`<scope>:<key>`) fleet-wide, claiming it when nobody has.
    pub async fn claim(&self, scoped_key: &str) -> FleetClaim {
        let Some(link) = &self.link else {
            return FleetClaim::Unavailable;
        };
        let (answer_key, marker_key) = link.idem_keys(scoped_key);
        let n = link.claims.fetch_add(1, Ordering::Relaxed);
        let claim_id = format!(
            "{}-{n}-{}:{}",
            link.instance,
            random_hex(4),
            link.in_flight_ttl_ms
        );
        let ttl = link.in_flight_ttl_ms;
        let reply = {
            let (answer_key, marker_key, claim_id) =
                (answer_key.clone(), marker_key.clone(), claim_id.clone());
            link.dispatch("idempotency_claim", move |mut c| async move {
                CLAIM_SCRIPT
                    .key(answer_key)
                    .key(marker_key)
                    .arg(claim_id)
                    .arg(ttl)
                    .invoke_async::<Vec<Value>>(&mut c)
                    .await
            })
            .await
        };
        let reply = match reply {
            Ok(reply) => reply,
            Err(sent) => {
                // A claim sent that failed or timed out may still run on Redis and set the
                // marker, which no ticket here would clear: released once Redis answers.
                if sent {
                    link.release_later(marker_key, claim_id);
                }
                return FleetClaim::Unavailable;
            }
        };
        let owner = |claim_id: String| {
            FleetClaim::Owner(Ticket {
                link: link.clone(),
                scoped_key: scoped_key.to_owned(),
                claim_id,
                done: false,
            })
        };
        match reply.as_slice() {
            [Value::Int(0)] => owner(claim_id),
            [Value::Int(1), Value::BulkString(v)] => match decode_answer(v) {
                Some(f) => FleetClaim::Answer(f),
                None => {
                    link.fallback("idempotency_claim", "undecodable answer in Redis");
                    FleetClaim::Unavailable
                }
            },
            [Value::Int(2), holder, Value::Int(pttl)] => {
                let holder = match holder {
                    Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                    _ => String::new(),
                };
                // The holder's age on Redis' clock: the ttl it set minus what is left.
                let set_ttl = holder
                    .rsplit_once(':')
                    .and_then(|(_, t)| t.parse::<i64>().ok())
                    .unwrap_or(0);
                let age = set_ttl - pttl;
                if holder.is_empty() || age <= link.stale_ms {
                    return FleetClaim::Busy;
                }
                // Its owner never answered (its instance died): take it over. The
                // database replays the answer if the owner had committed one.
                let (marker, mine) = (marker_key.clone(), claim_id.clone());
                let took = link
                    .dispatch("idempotency_claim", move |mut c| async move {
                        TAKE_OVER_SCRIPT
                            .key(marker)
                            .arg(holder)
                            .arg(mine)
                            .arg(ttl)
                            .invoke_async::<i64>(&mut c)
                            .await
                    })
                    .await;
                match took {
                    Ok(1) => {
                        tracing::warn!(
                            key = scoped_key,
                            age_ms = age,
                            "took over an abandoned in-flight marker"
                        );
                        owner(claim_id)
                    }
                    Ok(_) => FleetClaim::Busy,
                    Err(sent) => {
                        // A take-over that ran on Redis unheard holds the marker for us.
                        if sent {
                            link.release_later(marker_key, claim_id);
                        }
                        FleetClaim::Unavailable
                    }
                }
            }
            _ => {
                link.fallback("idempotency_claim", "unexpected reply from Redis");
                FleetClaim::Unavailable
            }
        }
    }

    /// Tells every instance (this one included) that a card's rules changed.
    pub async fn publish_card_change(&self, card_id: &str) {
        let Some(link) = &self.link else { return };
        let channel = link.channel();
        let message = format!("card:{card_id}");
        link.call("rules_publish", move |mut c| async move {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(message)
                .query_async::<i64>(&mut c)
                .await
        })
        .await;
    }

    /// Takes one token from `bucket_id`'s bucket: `None` when Redis cannot say (use the
    /// in-process bucket), else `Ok(())` or `Err(ms until the next token)`.
    pub async fn take_token(
        &self,
        bucket_id: &str,
        rate_per_sec: u32,
        burst: u32,
    ) -> Option<Result<(), u64>> {
        let link = self.link.as_ref()?;
        let key = format!("{}ratelimit:admin:{bucket_id}", link.prefix);
        let reply = link
            .call("rate_limit", move |mut c| async move {
                TAKE_TOKEN_SCRIPT
                    .key(key)
                    .arg(rate_per_sec)
                    .arg(burst)
                    .invoke_async::<(i64, i64)>(&mut c)
                    .await
            })
            .await?;
        Some(match reply {
            (1, _) => Ok(()),
            (_, wait) => Err(u64::try_from(wait).unwrap_or(1000)),
        })
    }
}

fn decode_answer(v: &[u8]) -> Option<Finished> {
    if v.len() < 34 {
        return None;
    }
    let mut request_hash = [0u8; 32];
    request_hash.copy_from_slice(&v[..32]);
    Some(Finished {
        request_hash,
        status: u16::from_be_bytes([v[32], v[33]]),
        body: Arc::new(v[34..].to_vec()),
    })
}

impl Link {
    /// Releases the in-flight marker `marker_key` if it still holds `claim_id`, in the
    /// background and once Redis answers (a marker no ticket will clear: a claim whose
    /// answer timed out, a finish or release skipped while Redis was down). Left alone,
    /// every other instance would answer the key's duplicates 425 until the marker is stale,
    /// though the database holds the answer. Given up once it would be stale anyway.
    fn release_later(self: &Arc<Self>, marker_key: String, claim_id: String) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let link = self.clone();
        rt.spawn(async move {
            let stale = Duration::from_millis(u64::try_from(link.stale_ms).unwrap_or(u64::MAX));
            let until = tokio::time::Instant::now() + stale;
            while link.down.load(Ordering::SeqCst) {
                if tokio::time::Instant::now() >= until {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            link.release("idempotency_release", marker_key, claim_id)
                .await;
        });
    }

    /// Deletes `key` if it still holds `token` (ours: another's is left as it is).
    async fn release(&self, op: &'static str, key: String, token: String) {
        self.call(op, move |mut c| async move {
            RELEASE_SCRIPT
                .key(key)
                .arg(token)
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await;
    }

    fn reserving_key(&self, channel: &str, reservation_id: &str) -> String {
        format!("{}reserving:{channel}:{reservation_id}", self.prefix)
    }

    fn idem_keys(&self, scoped_key: &str) -> (String, String) {
        (
            format!("{}idem:answer:{scoped_key}", self.prefix),
            format!("{}idem:inflight:{scoped_key}", self.prefix),
        )
    }

    fn channel(&self) -> String {
        format!("{}rules", self.prefix)
    }

    fn fallback(&self, op: &'static str, why: &str) {
        self.metrics
            .inc("authorizer_redis_fallbacks_total", &[("op", op)]);
        if !self.down.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                op,
                error = why,
                retry_ms = self.retry_ms,
                "Redis unavailable: falling back to in-process state and Postgres"
            );
        }
    }

    /// Runs one bounded Redis call; `None` (counted, logged once) when Redis is down,
    /// not connected yet, slow or failing.
    async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.dispatch(op, f).await.ok()
    }

    /// [`Link::call`], telling a call that was not sent (Redis down or not connected yet:
    /// `Err(false)`) from one sent that failed or timed out, which may still run on Redis
    /// (`Err(true)`).
    async fn dispatch<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, bool>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if self.down.load(Ordering::SeqCst) {
            self.metrics
                .inc("authorizer_redis_fallbacks_total", &[("op", op)]);
            return Err(false);
        }
        let Some(conn) = self.conn.get() else {
            self.fallback(op, "not connected yet");
            return Err(false);
        };
        match tokio::time::timeout(self.command, f(conn.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.fallback(op, &e.to_string());
                Err(true)
            }
            Err(_) => {
                self.fallback(op, "timed out");
                Err(true)
            }
        }
    }
}

/// Opens the connection manager, retrying until Redis answers; then, while calls are
/// failing (`down`), pings every `redis.retry_ms` (which also makes the manager reconnect)
/// and puts Redis back in use once it answers.
async fn connect(link: Arc<Link>) {
    let mut shutdown = link.shutdown.subscribe();
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_millis(1000))
        .set_response_timeout(link.command.max(Duration::from_millis(100)))
        .set_number_of_retries(1)
        .set_max_delay(200);
    loop {
        match ConnectionManager::new_with_config(link.client.clone(), config.clone()).await {
            Ok(c) => {
                let _ = link.conn.set(c);
                tracing::info!("connected to Redis");
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot connect to Redis yet; serving from Postgres");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(u64::try_from(link.retry_ms).unwrap_or(1000))) => {}
            _ = shutdown.changed() => return,
        }
    }
    let Some(conn) = link.conn.get() else { return };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(u64::try_from(link.retry_ms).unwrap_or(1000))) => {}
            _ = shutdown.changed() => return,
        }
        if !link.down.load(Ordering::SeqCst) {
            continue;
        }
        let mut c = conn.clone();
        let ping = redis::cmd("PING");
        let bound = link.command.max(Duration::from_millis(100));
        if let Ok(Ok(_)) = tokio::time::timeout(bound, ping.query_async::<Value>(&mut c)).await {
            link.down.store(false, Ordering::SeqCst);
            tracing::info!("Redis answers again: shared state back in use");
        }
    }
}

/// Keeps a subscription to the rules channel. The cache is flushed on every (re)subscribe
/// (messages may have been missed) and is not used while unsubscribed. A ping every
/// second finds a silently dead connection.
async fn subscribe(link: Arc<Link>, rules: Arc<RulesCache>) {
    let mut shutdown = link.shutdown.subscribe();
    let channel = link.channel();
    let retry = Duration::from_millis(u64::try_from(link.retry_ms).unwrap_or(1000));
    loop {
        let attempt = async {
            let mut pubsub = link.client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            redis::RedisResult::Ok(pubsub)
        };
        match tokio::time::timeout(Duration::from_millis(2000), attempt).await {
            Ok(Ok(pubsub)) => {
                let (mut sink, mut stream) = pubsub.split();
                rules.flush("reconnect");
                rules.set_live(true);
                link.subscribed.store(true, Ordering::SeqCst);
                tracing::info!(channel = %channel, "subscribed to rule changes");
                let mut ping = tokio::time::interval(Duration::from_secs(1));
                ping.tick().await;
                let why = loop {
                    tokio::select! {
                        msg = stream.next() => match msg {
                            Some(m) => {
                                let text = String::from_utf8_lossy(m.get_payload_bytes());
                                match text.strip_prefix("card:") {
                                    Some(card) => rules.invalidate(card, "fleet"),
                                    None => rules.flush("fleet"),
                                }
                            }
                            None => break "connection closed",
                        },
                        _ = ping.tick() => {
                            let alive = tokio::time::timeout(
                                Duration::from_millis(1000),
                                sink.ping::<Value>(),
                            ).await;
                            if !matches!(alive, Ok(Ok(_))) {
                                break "ping failed";
                            }
                        }
                        _ = shutdown.changed() => {
                            rules.set_live(false);
                            return;
                        }
                    }
                };
                link.subscribed.store(false, Ordering::SeqCst);
                rules.set_live(false);
                rules.flush("reconnect");
                link.metrics.inc(
                    "authorizer_redis_fallbacks_total",
                    &[("op", "rules_subscribe")],
                );
                tracing::warn!(
                    reason = why,
                    "rule change subscription lost: card rules are read from Postgres until it is back"
                );
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot subscribe to rule changes yet");
            }
            Err(_) => tracing::debug!("subscribing to rule changes timed out"),
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip() {
        let f = Finished {
            request_hash: [7; 32],
            status: 200,
            body: Arc::new(b"{\"status\":\"APPROVED\"}".to_vec()),
        };
        let mut v = f.request_hash.to_vec();
        v.extend_from_slice(&f.status.to_be_bytes());
        v.extend_from_slice(&f.body);
        let back = decode_answer(&v).unwrap();
        assert_eq!(back.request_hash, f.request_hash);
        assert_eq!(back.status, 200);
        assert_eq!(back.body, f.body);
        assert!(decode_answer(&v[..33]).is_none());
    }
}

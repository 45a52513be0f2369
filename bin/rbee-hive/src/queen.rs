//! Registration with today's rbee queen (PROTOCOL §9), and the count of its subscriptions.
//!
//! Today's queen learns of a hive from `POST {queen}/v1/hive/ready` and answers by opening a
//! subscription to `{hive_url}/v1/heartbeats/stream`; each registration opens one more,
//! and a queen that restarts forgets every hive. So the hive registers once it serves, and
//! again only when no subscription of that queen has been open for [`QUIET_BEFORE_AGAIN`]
//! — never while one is.
//!
//! **Telling the queen's subscription apart.** The `hive_url` registered with a queen is the
//! hive's URL plus `/queen/<key>`, `<key>` being 16 hex digits derived from that queen's URL
//! ([`queen_key`]). The queen builds its subscription from that URL, so it reads
//! `/queen/<key>/v1/heartbeats/stream`, a path no other reader is given; the hive serves the
//! stream there too and counts each open connection on it as that queen's subscription
//! ([`QueenLink::subscribed`]). The key depends only on the queen's URL, so a restarted hive
//! recognises the subscription a queen reopens on its own, and nothing needs to be kept on
//! disk. The path is not a secret: the token (or `telemetry_public`) guards the stream.
//!
//! **Which queens.** The configured `queen_url`, from the start; and a queen that sends
//! `GET /capabilities?queen_url=X` (discovery), from then on, at most [`MAX_QUEENS`] in all.
//!
//! **A restarted hive.** A queen that lost its subscription because the hive went away
//! keeps trying to reopen it every 5 s, and a registration would give it a second one. So
//! the configured queen is written to `<state_dir>/queens.json` before the hive first
//! registers with it, and a hive that finds it there waits [`EARLIER_RUN_WAIT`] (two of the
//! queen's retries) for the queen to come back on its own before registering. A crash
//! between that write and the registration costs the next start this wait, never a second
//! subscription.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, LiveConfig};
use crate::metrics::Metrics;

/// How long no subscription of a queen has been open before the hive registers with it again.
pub const QUIET_BEFORE_AGAIN: Duration = Duration::from_secs(15);

/// The waits after the 1st, 2nd, … failed registration in a row; the last one repeats.
const BACKOFF: [Duration; 5] = [
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
    Duration::from_secs(30),
];

/// How long a hive that registered with the configured queen in an earlier run waits, from
/// its start, for that queen's subscription to come back before registering again.
pub const EARLIER_RUN_WAIT: Duration = Duration::from_secs(12);

/// The file, in the state dir, naming the configured queen the hive registers with.
const QUEENS_FILE: &str = "queens.json";

/// The most queens the hive registers with (the configured one and discovered ones).
pub const MAX_QUEENS: usize = 8;

/// How long one registration request may take (as the upstream hive's).
const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(5);

/// The path segment of a queen's subscriptions: FNV-1a (64 bits) of its URL, in hex. Stable
/// across hive restarts and Rust versions; it only has to tell queens apart.
pub fn queen_key(queen_url: &str) -> String {
    let hash = queen_url
        .trim_end_matches('/')
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    format!("{hash:016x}")
}

/// Whether `key` has the shape of a [`queen_key`].
pub fn is_queen_key(key: &str) -> bool {
    key.len() == 16
        && key
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// When the next registration with a queen is due, from what is known of it (pure: the
/// registration task and its tests use it).
pub fn next_registration(link: &QueenState, now: Instant) -> Due {
    if link.open > 0 {
        return Due::NotWhileSubscribed;
    }
    if let Some(retry_at) = link.retry_at {
        return Due::At(retry_at);
    }
    match (link.quiet_since, link.earlier_run_since) {
        (Some(since), _) => Due::At(since + QUIET_BEFORE_AGAIN),
        (None, Some(started)) => Due::At(started + EARLIER_RUN_WAIT),
        (None, None) => Due::At(now),
    }
}

/// The answer of [`next_registration`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// A subscription is open: not until it closes.
    NotWhileSubscribed,
    /// At this time (now or in the past: at once).
    At(Instant),
}

/// What the hive knows of one queen.
#[derive(Debug, Clone, Default)]
pub struct QueenState {
    /// Its subscriptions open now.
    pub open: usize,
    /// Since when none has been open, counted from the later of the last close and the last
    /// successful registration; `None` before the first registration.
    pub quiet_since: Option<Instant>,
    /// After a failed registration, when to try again.
    pub retry_at: Option<Instant>,
    /// Failed registrations in a row.
    pub failures: usize,
    /// Set when an earlier run of the hive registered with it: since when this run has
    /// been waiting for the queen's own reconnection.
    pub earlier_run_since: Option<Instant>,
    /// Whether it was configured (else discovered).
    pub configured: bool,
    /// The last registration's outcome, for `status`.
    pub last: Option<Outcome>,
    /// Subscriptions opened in all.
    pub subscriptions_opened: u64,
}

/// A registration's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Whether the queen accepted it.
    pub ok: bool,
    /// What the queen said, or why it failed.
    pub message: String,
    /// When.
    pub at: chrono::DateTime<chrono::Utc>,
}

/// The registration state of one queen, as `GET /v1/queen` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct QueenStatus {
    /// The queen's URL.
    pub queen_url: String,
    /// The `hive_url` registered with it.
    pub hive_url: String,
    /// `configured` or `discovered`.
    pub source: &'static str,
    /// Its subscriptions open now.
    pub subscriptions_open: usize,
    /// Subscriptions it opened since the hive started.
    pub subscriptions_opened: u64,
    /// The last registration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_registration: Option<Outcome>,
    /// Failed registrations in a row.
    pub failures: usize,
}

/// Why the hive does not register at all (shown by `GET /v1/queen`).
#[derive(Debug, Clone, Serialize)]
pub struct QueenReport {
    /// The queens it registers with.
    pub queens: Vec<QueenStatus>,
    /// Set when registration is off, saying why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_registering: Option<String>,
}

/// The registrations of this hive. A cheap `Clone` handle.
#[derive(Clone)]
pub struct QueenLink {
    inner: Arc<Inner>,
}

struct Inner {
    hive_id: String,
    /// Where `queens.json` is kept.
    state_dir: std::path::PathBuf,
    /// The hive's own URL for queens (`advertise_url` or its default), without `/queen/…`.
    hive_url: String,
    /// The configuration in effect: whether the queen can read the stream is asked before
    /// each registration (a reload may add a token).
    config: LiveConfig,
    client: reqwest::Client,
    metrics: Metrics,
    closing: CancellationToken,
    /// The queens and the subscriptions, under one lock so that a subscription that opens
    /// while its queen is added is counted once. Never held across an `.await`.
    links: Mutex<Links>,
    /// Woken when a subscription opens or closes.
    changed: tokio::sync::Notify,
    /// Set once the hive serves: registrations wait for it.
    serving: CancellationToken,
}

#[derive(Default)]
struct Links {
    /// By queen URL (normalised, [`normalise`]).
    queens: BTreeMap<String, QueenState>,
    /// Open subscriptions of a key no queen here has (a queen that found this hive again
    /// on its own after a restart), by key; moved to the queen if it is added.
    strays: BTreeMap<String, usize>,
}

impl Links {
    fn queen_of_key(&mut self, key: &str) -> Option<(&String, &mut QueenState)> {
        self.queens
            .iter_mut()
            .find(|(url, _)| queen_key(url) == key)
    }
}

/// Why a hive with this configuration must not register: today's queen sends no token, so
/// it could not read a protected stream, and each registration would leave it one more
/// subscription retrying for ever.
pub fn why_not_registering(config: &Config) -> Option<String> {
    (config.token.is_some() && !config.telemetry_public).then(|| {
        "the telemetry stream needs the token and today's queen sends none; set telemetry_public = true to be seen by it".to_owned()
    })
}

/// A queen's URL as the hive keys it: parsed (scheme and host in lowercase, default port
/// dropped) and without a trailing `/`, so that one queen written two ways is one queen.
pub fn normalise(queen_url: &str) -> String {
    match reqwest::Url::parse(queen_url) {
        Ok(url) => url.as_str().trim_end_matches('/').to_owned(),
        Err(_) => queen_url.trim_end_matches('/').to_owned(),
    }
}

impl QueenLink {
    /// The registrations of a hive with id `hive_id`, reached by queens at `hive_url`.
    pub fn new(
        hive_id: String,
        state_dir: std::path::PathBuf,
        hive_url: String,
        config: LiveConfig,
        metrics: Metrics,
        closing: CancellationToken,
    ) -> Self {
        let client = reqwest::Client::builder()
            .timeout(REGISTRATION_TIMEOUT)
            .user_agent(concat!("rbee-hive/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client without TLS or proxies to configure builds");
        Self {
            inner: Arc::new(Inner {
                hive_id,
                state_dir,
                hive_url,
                config,
                client,
                metrics,
                closing,
                links: Mutex::new(Links::default()),
                changed: tokio::sync::Notify::new(),
                serving: CancellationToken::new(),
            }),
        }
    }

    fn links(&self) -> std::sync::MutexGuard<'_, Links> {
        self.inner.links.lock().expect("queen links lock")
    }

    /// The `hive_url` registered with the queen at `queen_url`.
    pub fn hive_url_for(&self, queen_url: &str) -> String {
        format!(
            "{}/queen/{}",
            self.inner.hive_url,
            queen_key(&normalise(queen_url))
        )
    }

    /// Starts registering with `queen_url` (the configured queen, or one that discovered
    /// the hive); a queen already known is left to its task. Returns why not, when not.
    pub fn add(&self, queen_url: &str, configured: bool) -> Result<(), String> {
        if let Some(reason) = why_not_registering(&self.inner.config.current()) {
            return Err(reason);
        }
        let queen_url = normalise(queen_url);
        // Read before the lock: a file read is no work for a lock holder.
        let recorded = configured.then(|| self.recorded_queen()).flatten();
        {
            let mut links = self.links();
            if links.queens.contains_key(&queen_url) {
                return Ok(());
            }
            if links.queens.len() >= MAX_QUEENS {
                // Make room by forgetting a discovered queen that never took a registration
                // and has no subscription open (its task ends when it finds itself gone).
                let stale = links
                    .queens
                    .iter()
                    .find(|(_, queen)| {
                        !queen.configured
                            && queen.open == 0
                            && !queen.last.as_ref().is_some_and(|last| last.ok)
                    })
                    .map(|(url, _)| url.clone());
                match stale {
                    Some(url) => {
                        tracing::info!(
                            "forgetting the queen at {url} (never reached) to make room"
                        );
                        links.queens.remove(&url);
                    }
                    None => {
                        return Err(format!(
                            "already registering with {MAX_QUEENS} queens, the most a hive keeps"
                        ));
                    }
                }
            }
            let open = links.strays.remove(&queen_key(&queen_url)).unwrap_or(0);
            let earlier_run_since =
                (recorded.as_deref() == Some(queen_url.as_str())).then(Instant::now);
            links.queens.insert(
                queen_url.clone(),
                QueenState {
                    open,
                    configured,
                    earlier_run_since,
                    ..QueenState::default()
                },
            );
        }
        tokio::spawn(self.clone().register_loop(queen_url, configured));
        Ok(())
    }

    /// The configured queen an earlier run registered with (`queens.json`), if any.
    fn recorded_queen(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.inner.state_dir.join(QUEENS_FILE)).ok()?;
        let value: serde_json::Value = serde_json::from_str(&text).ok()?;
        value["configured"].as_str().map(str::to_owned)
    }

    /// Writes `queen_url` as the configured queen (atomically: a crash leaves the old file
    /// or the new one).
    fn record_queen(&self, queen_url: &str) -> std::io::Result<()> {
        let path = self.inner.state_dir.join(QUEENS_FILE);
        let temporary = self.inner.state_dir.join(format!("{QUEENS_FILE}.tmp"));
        let text = serde_json::json!({ "configured": queen_url }).to_string();
        std::fs::write(&temporary, text)?;
        std::fs::File::open(&temporary)?.sync_all()?;
        std::fs::rename(&temporary, &path)
    }

    /// Lets the registrations begin: the hive serves (its workers adopted, its socket
    /// accepting).
    pub fn serving(&self) {
        self.inner.serving.cancel();
    }

    /// A subscription on `/queen/<key>/…` opened; it counts until the guard is dropped (the
    /// connection closed).
    pub fn subscribed(&self, key: &str) -> SubscriptionGuard {
        let queen = {
            let mut links = self.links();
            match links.queen_of_key(key) {
                Some((url, queen)) => {
                    queen.open += 1;
                    queen.subscriptions_opened += 1;
                    // The queen has the hive: whatever a registration said, it worked.
                    queen.retry_at = None;
                    queen.failures = 0;
                    Some(url.clone())
                }
                None => {
                    *links.strays.entry(key.to_owned()).or_default() += 1;
                    None
                }
            }
        };
        self.inner.metrics.queen_subscriptions().inc();
        tracing::info!(
            "queen subscription opened ({})",
            queen
                .as_deref()
                .unwrap_or("a queen this hive did not register with")
        );
        self.inner.changed.notify_waiters();
        SubscriptionGuard {
            link: self.clone(),
            key: key.to_owned(),
        }
    }

    fn unsubscribed(&self, key: &str) {
        let queen = {
            let mut links = self.links();
            match links.queen_of_key(key) {
                Some((url, queen)) => {
                    queen.open = queen.open.saturating_sub(1);
                    if queen.open == 0 {
                        queen.quiet_since = Some(Instant::now());
                        // A failure noted while the queen was subscribed (a POST that timed
                        // out after the queen acted on it) must not cut the 15 s short.
                        queen.retry_at = None;
                    }
                    Some(url.clone())
                }
                None => {
                    if let Some(open) = links.strays.get_mut(key) {
                        *open = open.saturating_sub(1);
                        if *open == 0 {
                            links.strays.remove(key);
                        }
                    }
                    None
                }
            }
        };
        self.inner.metrics.queen_subscriptions().dec();
        tracing::info!(
            "queen subscription closed ({})",
            queen
                .as_deref()
                .unwrap_or("a queen this hive did not register with")
        );
        self.inner.changed.notify_waiters();
    }

    /// Every queen and its state, for `GET /v1/queen` and `status`.
    pub fn report(&self) -> QueenReport {
        let not_registering = why_not_registering(&self.inner.config.current());
        let links = self.links();
        QueenReport {
            queens: links
                .queens
                .iter()
                .map(|(url, queen)| QueenStatus {
                    queen_url: url.clone(),
                    hive_url: self.hive_url_for(url),
                    source: if queen.configured {
                        "configured"
                    } else {
                        "discovered"
                    },
                    subscriptions_open: queen.open,
                    subscriptions_opened: queen.subscriptions_opened,
                    last_registration: queen.last.clone(),
                    failures: queen.failures,
                })
                .collect(),
            not_registering,
        }
    }

    /// Registers with `queen_url` whenever [`next_registration`] says, until the hive closes
    /// or forgets that queen.
    async fn register_loop(self, queen_url: String, configured: bool) {
        let closing = self.inner.closing.clone();
        tokio::select! {
            () = closing.cancelled() => return,
            () = self.inner.serving.cancelled() => {}
        }
        if configured
            && self.recorded_queen().as_deref() != Some(queen_url.as_str())
            && let Err(error) = self.record_queen(&queen_url)
        {
            tracing::warn!(
                "cannot note the queen in {}: {error}; a restart may give it a second subscription",
                self.inner.state_dir.join(QUEENS_FILE).display()
            );
        }
        loop {
            // Registered before the state is read, so that no change falls between the two.
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let due = {
                let links = self.links();
                let Some(queen) = links.queens.get(&queen_url) else {
                    return;
                };
                next_registration(queen, Instant::now())
            };
            match due {
                Due::NotWhileSubscribed => {
                    tokio::select! {
                        () = closing.cancelled() => return,
                        () = changed => continue,
                    }
                }
                Due::At(at) if at > Instant::now() => {
                    tokio::select! {
                        () = closing.cancelled() => return,
                        () = changed => continue,
                        () = tokio::time::sleep_until(at) => continue,
                    }
                }
                Due::At(_) => {}
            }
            // A reload may have put a token in front of the stream since the last try.
            if let Some(why) = why_not_registering(&self.inner.config.current()) {
                tracing::warn!("not registering with the queen at {queen_url}: {why}");
                let recheck = Instant::now() + *BACKOFF.last().expect("a backoff");
                tokio::select! {
                    () = closing.cancelled() => return,
                    () = tokio::time::sleep_until(recheck) => continue,
                }
            }
            let outcome = tokio::select! {
                () = closing.cancelled() => return,
                outcome = self.register_once(&queen_url) => outcome,
            };
            self.inner.metrics.queen_registration(outcome.ok);
            let mut links = self.links();
            let Some(queen) = links.queens.get_mut(&queen_url) else {
                return;
            };
            let now = Instant::now();
            if outcome.ok {
                tracing::info!(
                    "registered with the queen at {queen_url} as {:?} ({}); it should subscribe to {}/v1/heartbeats/stream",
                    self.inner.hive_id,
                    outcome.message,
                    self.hive_url_for(&queen_url)
                );
                queen.failures = 0;
                queen.retry_at = None;
                if queen.open == 0 {
                    queen.quiet_since = Some(now);
                }
            } else if queen.open > 0 {
                // The queen subscribed while the answer was lost: it has the hive.
                tracing::info!(
                    "registration with the queen at {queen_url} failed ({}), but its subscription is open",
                    outcome.message
                );
            } else {
                let wait = BACKOFF[queen.failures.min(BACKOFF.len() - 1)];
                queen.failures += 1;
                queen.retry_at = Some(now + wait);
                tracing::warn!(
                    "registration with the queen at {queen_url} failed ({} in a row): {}; next try in {} s",
                    queen.failures,
                    outcome.message,
                    wait.as_secs()
                );
            }
            queen.last = Some(outcome);
        }
    }

    async fn register_once(&self, queen_url: &str) -> Outcome {
        let body = HiveReady {
            hive_id: &self.inner.hive_id,
            hive_url: self.hive_url_for(queen_url),
        };
        let sent = self
            .inner
            .client
            .post(format!("{queen_url}/v1/hive/ready"))
            .json(&body)
            .send()
            .await;
        let (ok, message) = match sent {
            Err(error) => (false, describe(&error)),
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                let said = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
                    .unwrap_or_else(|| text.chars().take(200).collect());
                if status.is_success() {
                    (true, said)
                } else {
                    (false, format!("HTTP {status}: {said}"))
                }
            }
        };
        Outcome {
            ok,
            message,
            at: chrono::Utc::now(),
        }
    }
}

/// The body of `POST {queen}/v1/hive/ready`: today's queen's `HiveReadyCallback`
/// (`bin/10_queen_rbee/src/http/heartbeat.rs`), field for field.
#[derive(Debug, Serialize)]
struct HiveReady<'a> {
    hive_id: &'a str,
    hive_url: String,
}

/// The error of a request and its causes, in one line.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Counts one open queen subscription until dropped.
pub struct SubscriptionGuard {
    link: QueenLink,
    key: String,
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        self.link.unsubscribed(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_tell_queens_apart_and_ignore_a_trailing_slash() {
        let a = queen_key("http://queen:7833");
        assert_eq!(a, queen_key("http://queen:7833/"));
        assert_ne!(a, queen_key("http://queen:7834"));
        assert!(is_queen_key(&a), "{a}");
        // Fixed by the algorithm: a restarted hive must derive the same key.
        assert_eq!(queen_key(""), "cbf29ce484222325");
        for bad in [
            "",
            "cbf29ce48422232",
            "CBF29CE484222325",
            "cbf29ce48422232z",
        ] {
            assert!(!is_queen_key(bad), "{bad}");
        }
    }

    #[test]
    fn registers_first_at_once_then_only_after_fifteen_quiet_seconds() {
        let now = Instant::now();
        let mut queen = QueenState::default();
        assert_eq!(next_registration(&queen, now), Due::At(now));
        // Registered, no subscription yet: again 15 s later unless one opens.
        queen.quiet_since = Some(now);
        assert_eq!(
            next_registration(&queen, now),
            Due::At(now + QUIET_BEFORE_AGAIN)
        );
        // Subscribed: never while it is open, however long ago the last registration was.
        queen.open = 1;
        assert_eq!(
            next_registration(&queen, now + Duration::from_secs(3600)),
            Due::NotWhileSubscribed
        );
        // Closed (a restarted queen): 15 s after the close.
        queen.open = 0;
        let closed = now + Duration::from_secs(100);
        queen.quiet_since = Some(closed);
        assert_eq!(
            next_registration(&queen, closed),
            Due::At(closed + QUIET_BEFORE_AGAIN)
        );
        // A hive that registered in an earlier run gives the queen time to reconnect first.
        let started = now + Duration::from_secs(200);
        let restarted = QueenState {
            earlier_run_since: Some(started),
            ..QueenState::default()
        };
        assert_eq!(
            next_registration(&restarted, started),
            Due::At(started + EARLIER_RUN_WAIT)
        );
        // A failure's backoff decides while it lasts, but never over an open subscription.
        queen.retry_at = Some(closed + Duration::from_secs(2));
        assert_eq!(
            next_registration(&queen, closed),
            Due::At(closed + Duration::from_secs(2))
        );
        queen.open = 1;
        assert_eq!(next_registration(&queen, closed), Due::NotWhileSubscribed);
    }

    fn link(config: Config) -> QueenLink {
        QueenLink::new(
            "h".into(),
            std::env::temp_dir(),
            "http://hive:7835".into(),
            LiveConfig::new(config),
            Metrics::new(&[]),
            CancellationToken::new(),
        )
    }

    #[tokio::test]
    async fn a_subscription_counts_once_and_its_close_starts_the_fifteen_seconds() {
        let link = link(Config::default());
        let url = "http://Queen:7833/";
        let key = queen_key(&normalise(url));
        // The queen's own reconnection arrives before the hive adds it: counted, then moved.
        let early = link.subscribed(&key);
        link.add(url, false).unwrap();
        link.add("http://queen:7833", false).unwrap();
        let report = link.report();
        assert_eq!(report.queens.len(), 1, "one queen, however it is written");
        assert_eq!(report.queens[0].subscriptions_open, 1);
        // A registration that failed while the queen was subscribed leaves no backoff
        // behind: when the subscription closes, the 15 s rule decides.
        link.links()
            .queens
            .values_mut()
            .for_each(|queen| queen.retry_at = Some(Instant::now()));
        drop(early);
        let links = link.links();
        let queen = links.queens.values().next().unwrap();
        assert_eq!(queen.open, 0);
        let now = Instant::now();
        assert!(
            matches!(next_registration(queen, now), Due::At(at) if at > now + Duration::from_secs(14)),
            "{queen:?}"
        );
        assert!(links.strays.is_empty());
    }

    #[tokio::test]
    async fn a_hive_whose_stream_needs_the_token_does_not_register_and_says_why() {
        let guarded = Config {
            token: Some("t".into()),
            ..Config::default()
        };
        let error = link(guarded.clone())
            .add("http://queen:7833", true)
            .unwrap_err();
        assert!(error.contains("telemetry_public"), "{error}");
        let open = Config {
            telemetry_public: true,
            ..guarded
        };
        assert!(link(open).add("http://queen:7833", true).is_ok());
    }

    #[test]
    fn backoff_doubles_from_two_seconds_then_stays_at_thirty() {
        let waits: Vec<u64> = (0..7)
            .map(|failures: usize| BACKOFF[failures.min(BACKOFF.len() - 1)].as_secs())
            .collect();
        assert_eq!(waits, [2, 4, 8, 16, 30, 30, 30]);
    }
}

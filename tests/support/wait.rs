//! Waiting for a condition with a deadline: the one place where the tests poll.
//!
//! Tests never sleep to let something happen; they wait until it has happened, and fail
//! with what they waited for (and what they saw last) when it does not happen in time. The
//! deadlines only catch a hive that never gets there: they are generous, and nothing is
//! asserted about how long a wait took.
//!
//! - [`wait_until`]: a condition read without waiting (a process gone, a file written).
//! - [`wait_for`]: something observed by an `async` call (a record, a scrape of
//!   `/metrics`), until it is acceptable; returns what was accepted.
//! - [`holds_for`]: the opposite, for "nothing happens": a condition that must hold at
//!   every look during a period. Its period is the behaviour under test.
//! - [`wait_until_blocking`]: [`wait_until`] for code that cannot `.await` (`Drop`).

use std::fmt::{Debug, Display};
use std::future::Future;
use std::time::{Duration, Instant};

/// How long a wait sleeps between two looks.
pub const POLL: Duration = Duration::from_millis(10);

/// How long a wait sleeps between two looks that cost a request to the hive.
pub const POLL_REQUEST: Duration = Duration::from_millis(25);

/// How often [`holds_for`] looks.
const HOLD_POLL: Duration = Duration::from_millis(50);

/// Polls `condition` until it holds; fails the test with `what` after `timeout`. For
/// conditions that nothing announces (a process gone, a file written by another process).
pub async fn wait_until(what: impl Display, timeout: Duration, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Calls `observe` until `accept` takes what it returned, and returns that; fails the test
/// with `what` and the last thing observed after `timeout`.
pub async fn wait_for<T, F>(
    what: impl Display,
    timeout: Duration,
    observe: impl FnMut() -> F,
    accept: impl Fn(&T) -> bool,
) -> T
where
    T: Debug,
    F: Future<Output = T>,
{
    wait_for_every(what, timeout, POLL_REQUEST, observe, accept).await
}

/// [`wait_for`], looking every `every` (for an observation that costs the hive much).
pub async fn wait_for_every<T, F>(
    what: impl Display,
    timeout: Duration,
    every: Duration,
    mut observe: impl FnMut() -> F,
    accept: impl Fn(&T) -> bool,
) -> T
where
    T: Debug,
    F: Future<Output = T>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let seen = observe().await;
        if accept(&seen) {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}; last seen: {seen:#?}"
        );
        tokio::time::sleep(every).await;
    }
}

/// Asserts that what `observe` returns is accepted by `accept` at every look, from now
/// until `period` has passed, the end included: for absence ("no second run is started"),
/// which only a time can show. A look that is not accepted fails the test with `what`
/// and what it saw.
pub async fn holds_for<T: Debug>(
    what: impl Display,
    period: Duration,
    observe: impl Fn() -> T,
    accept: impl Fn(&T) -> bool,
) {
    let end = Instant::now() + period;
    loop {
        let seen = observe();
        assert!(accept(&seen), "no longer true: {what}; seen: {seen:#?}");
        let Some(left) = end.checked_duration_since(Instant::now()) else {
            return;
        };
        // This sleep paces the looks during a period that is itself the behaviour under
        // test (nothing changes during it); it waits for nothing to happen.
        tokio::time::sleep(left.min(HOLD_POLL)).await;
    }
}

/// What a wait is for, followed by `more` (a log, say), which is made only if the wait
/// fails.
pub fn with_context<'a>(what: &'a str, more: impl Fn() -> String + 'a) -> impl Display + 'a {
    struct Described<'a, F>(&'a str, F);
    impl<F: Fn() -> String> Display for Described<'_, F> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}\n{}", self.0, (self.1)())
        }
    }
    Described(what, more)
}

/// Polls `condition` until it holds, blocking the thread; `false` after `timeout`. For code
/// that cannot `.await` (a `Drop`).
pub fn wait_until_blocking(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

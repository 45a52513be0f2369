//! What the hive says to its service manager and takes from it: systemd's protocols, which
//! any supervisor can speak; none of this needs systemd to be present, and without the
//! environment variables below every function here does nothing.
//!
//! - Notify (sd_notify(3), a datagram to `NOTIFY_SOCKET`): `READY=1` once the state file is
//!   read, the workers are adopted and the socket listens; `STATUS=` with the worker and job
//!   counts as they change; `WATCHDOG=1` at half of `WATCHDOG_USEC`, from a task of the
//!   runtime that serves requests, so a wedged runtime stops the pings and is restarted;
//!   `STOPPING=1` when the shutdown begins; `RELOADING=1` with `MONOTONIC_USEC` when a
//!   reload begins (`Type=notify-reload`), then `READY=1` again.
//! - Socket activation (sd_listen_fds(3)): with `LISTEN_FDS` and `LISTEN_PID` naming this
//!   process, the hive serves on the listening socket passed as fd 3 instead of binding one,
//!   so the socket (and the connections waiting on it) outlives a restart of the hive.
//!
//! The workers never inherit these variables nor the socket (see `worker-lifecycle`).

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use worker_lifecycle::{WorkerManager, WorkerStatus};

/// Sends `states` to the service manager, if there is one; a failure is logged, never fatal
/// (the hive serves whether or not anyone listens).
pub fn notify(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!("cannot notify the service manager: {error}");
    }
}

/// `READY=1` with the current status.
pub fn ready(workers: &WorkerManager) {
    let status = status_line(workers);
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// `STOPPING=1`.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// `RELOADING=1` with the monotonic time it began, as `Type=notify-reload` needs.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(error) => tracing::warn!("cannot read the monotonic clock: {error}"),
    }
}

/// The `STATUS=` text: workers by state.
pub fn status_line(workers: &WorkerManager) -> String {
    let (mut starting, mut ready, mut busy, mut gone) = (0, 0, 0, 0);
    for record in workers.list() {
        match record.status {
            WorkerStatus::Starting => starting += 1,
            WorkerStatus::Ready => ready += 1,
            WorkerStatus::Busy => busy += 1,
            WorkerStatus::Stopped | WorkerStatus::Failed { .. } => gone += 1,
        }
    }
    format!("{ready} ready, {busy} busy, {starting} starting, {gone} stopped or failed worker(s)")
}

/// Keeps `STATUS=` current: after each worker change (at most every 200 ms) until `stop`.
/// Does nothing without a service manager.
pub fn spawn_status(workers: WorkerManager, stop: CancellationToken) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let mut events = workers.subscribe();
    tokio::spawn(async move {
        let mut last = String::new();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                event = events.recv() => {
                    if let Err(tokio::sync::broadcast::error::RecvError::Closed) = event {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            // What the sleep gathered is in the line below; the events it left are old.
            events = events.resubscribe();
            let status = status_line(&workers);
            if status != last {
                notify(&[NotifyState::Status(&status)]);
                last = status;
            }
        }
    });
}

/// Pings the watchdog at half of `WATCHDOG_USEC`, when the service manager set one for this
/// process, until `stop`. The task runs on the caller's runtime: if that runtime is wedged,
/// the pings stop and the service manager restarts the hive.
pub fn spawn_watchdog(stop: CancellationToken) {
    let Some(timeout) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = ping_interval(timeout);
    tracing::info!("pinging the service manager's watchdog every {every:?}");
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticker.tick() => notify(&[NotifyState::Watchdog]),
            }
        }
    });
}

/// Half of the watchdog timeout, as sd_watchdog_enabled(3) advises.
fn ping_interval(timeout: Duration) -> Duration {
    (timeout / 2).max(Duration::from_millis(1))
}

/// Why an inherited socket cannot be served on.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// `LISTEN_FDS` or `LISTEN_PID` is malformed, or the descriptor cannot be read.
    #[error("socket activation: {0}")]
    Environment(#[from] std::io::Error),
    /// The descriptor is not a listening TCP socket.
    #[error("socket activation: fd {fd} is not a listening TCP socket ({what})")]
    NotATcpListener {
        /// The descriptor.
        fd: i32,
        /// What it is instead.
        what: String,
    },
}

/// The listening socket the service manager passed (`LISTEN_FDS`, fd 3 on), if any. Only
/// the first is served; the descriptors are made close-on-exec, so no worker inherits them.
pub fn inherited_listener() -> Result<Option<std::net::TcpListener>, ActivationError> {
    // The descriptors are handed over once: a second call must not own fd 3 again.
    static TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if TAKEN.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return Ok(None);
    }
    let mut fds = sd_notify::listen_fds()?;
    let count = fds.len();
    let Some(fd) = fds.next() else {
        return Ok(None);
    };
    if count > 1 {
        tracing::warn!("socket activation passed {count} sockets; serving on the first (fd {fd})");
    }
    #[allow(unsafe_code)]
    // SAFETY: by the socket activation protocol (LISTEN_PID names this process), the
    // descriptors from 3 on are open and handed over to this process; each is taken once,
    // here, so the `OwnedFd` is their only owner.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    use nix::sys::socket::{AddressFamily, SockType, SockaddrLike, SockaddrStorage};
    use nix::sys::socket::{getsockname, getsockopt, sockopt};
    let not_tcp = |what: String| ActivationError::NotATcpListener { fd, what };
    let kind = getsockopt(&owned, sockopt::SockType).map_err(|e| not_tcp(e.to_string()))?;
    if kind != SockType::Stream {
        return Err(not_tcp(format!("{kind:?}")));
    }
    let address: SockaddrStorage =
        getsockname(std::os::fd::AsRawFd::as_raw_fd(&owned)).map_err(|e| not_tcp(e.to_string()))?;
    if !matches!(
        address.family(),
        Some(AddressFamily::Inet | AddressFamily::Inet6)
    ) {
        return Err(not_tcp(format!("address family {:?}", address.family())));
    }
    if !getsockopt(&owned, sockopt::AcceptConn).map_err(|e| not_tcp(e.to_string()))? {
        return Err(not_tcp("not listening".into()));
    }
    let listener = std::net::TcpListener::from(owned);
    listener.set_nonblocking(true)?;
    Ok(Some(listener))
}

/// A test hook, on only when `RBEE_HIVE_TEST_WEDGE_ON_SIGUSR2` is set: SIGUSR2 then blocks
/// every worker thread of the runtime for good, as a deadlock would, so a test can see the
/// watchdog pings stop.
pub fn spawn_test_wedge() -> std::io::Result<()> {
    if std::env::var_os("RBEE_HIVE_TEST_WEDGE_ON_SIGUSR2").is_none() {
        return Ok(());
    }
    let mut usr2 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2())?;
    tokio::spawn(async move {
        usr2.recv().await;
        tracing::warn!("SIGUSR2 with the test hook on: wedging the runtime");
        let threads = tokio::runtime::Handle::current().metrics().num_workers();
        for _ in 0..threads * 2 {
            tokio::spawn(async { std::thread::sleep(Duration::from_secs(u64::MAX / 4)) });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_pinged_at_half_its_timeout() {
        assert_eq!(
            ping_interval(Duration::from_secs(30)),
            Duration::from_secs(15)
        );
        assert_eq!(
            ping_interval(Duration::from_micros(200_000)),
            Duration::from_millis(100)
        );
        assert_eq!(
            ping_interval(Duration::from_micros(1)),
            Duration::from_millis(1)
        );
    }
}

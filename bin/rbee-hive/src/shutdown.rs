//! Shutdown signals. `main` installs [`Signals`] and passes its first and second signal to
//! [`run`](crate::run); a caller that embeds the hive passes any futures it likes.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// Counts SIGTERM and SIGINT: the first starts the shutdown, a second one during shutdown
/// skips the remaining grace and kills the workers.
#[derive(Clone)]
pub struct Signals {
    count: watch::Receiver<u32>,
}

impl Signals {
    /// Starts listening for SIGTERM and SIGINT; must be called within a Tokio runtime.
    pub fn install() -> std::io::Result<Self> {
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let (tx, count) = watch::channel(0u32);
        tokio::spawn(async move {
            loop {
                let name = tokio::select! {
                    _ = terminate.recv() => "SIGTERM",
                    _ = interrupt.recv() => "SIGINT",
                };
                tx.send_modify(|n| *n += 1);
                tracing::info!("{name} received ({})", *tx.borrow());
            }
        });
        Ok(Self { count })
    }

    /// Resolves on the first signal.
    pub async fn first(mut self) {
        let _ = self.count.wait_for(|n| *n >= 1).await;
    }

    /// Resolves on the second signal.
    pub async fn second(mut self) {
        let _ = self.count.wait_for(|n| *n >= 2).await;
    }
}

//! Stopping background work: every worker takes a `watch::Receiver<bool>` that turns true
//! when the process shuts down.

use tokio::sync::watch;

/// Waits for `wake` or a shutdown; true when the background task should stop.
pub async fn stopped_while(wake: impl Future<Output = ()>, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = wake => {}
        _ = shutdown.changed() => {}
    }
    *shutdown.borrow()
}

//! Prefect's log stream: a flow run's log lines as Prefect receives them.
//!
//! `wss://…/api/logs/out` (see [`super::socket`]) takes a log filter and answers
//! `{"type": "log", "log": {…}}` messages, one per line stored from then on. The server
//! must stream logs out (`PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED`); lines from before the
//! subscription are read with `POST /logs/filter`.

use serde_json::json;

use super::socket::Socket;
use super::{PrefectClient, PrefectError, PrefectLog};

/// An open subscription to one flow run's log lines.
pub struct LogStream {
    socket: Socket,
}

impl PrefectClient {
    /// Subscribes to the lines of `flow_run_id` at or above `min_level` from now on.
    pub async fn flow_run_log_stream(
        &self,
        flow_run_id: &str,
        min_level: i32,
    ) -> Result<LogStream, PrefectError> {
        let filter = json!({
            "type": "filter",
            "filter": {
                "flow_run_id": { "any_": [flow_run_id] },
                "level": { "ge_": min_level },
            },
        });
        let socket = self.subscribe("logs/out", "log stream", filter).await?;
        Ok(LogStream { socket })
    }
}

impl LogStream {
    /// The next line. An error ends the stream: Prefect closed it, went silent through a
    /// ping, or sent something unreadable.
    pub async fn next(&mut self) -> Result<PrefectLog, PrefectError> {
        let log = self.socket.next_of("log").await?;
        serde_json::from_value(log).map_err(|e| PrefectError::Garbage(format!("log stream: {e}")))
    }
}

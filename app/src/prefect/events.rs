//! Prefect's event stream: flow run state changes as they happen.
//!
//! `wss://…/api/events/out` (see [`super::socket`]) answers `{"type": "event", "event":
//! {…}}` messages. Flowdeck asks for flow run events only.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::socket::Socket;
use super::{PrefectClient, PrefectError};

/// A flow run entered a new state.
#[derive(Debug, Clone, PartialEq)]
pub struct StateChange {
    /// Prefect's event id.
    pub event_id: String,
    /// The flow run.
    pub flow_run_id: String,
    /// State type: `RUNNING`, `COMPLETED`, ...
    pub state_type: String,
    /// State name: `Running`, `Late`, ...
    pub state_name: String,
    /// The state's message, if any.
    pub message: Option<String>,
    /// When the run entered the state.
    pub timestamp: Option<DateTime<Utc>>,
}

impl StateChange {
    /// Reads a `prefect.flow-run.<State>` event; `None` for any other event.
    pub fn from_event(event: &Value) -> Option<Self> {
        let name = event.get("event")?.as_str()?;
        let suffix = name.strip_prefix("prefect.flow-run.")?;
        let resource = event.get("resource")?;
        let field = |key: &str| {
            resource
                .get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let flow_run_id = field("prefect.resource.id")?.strip_prefix("prefect.flow-run.")?;
        let state_type = field("prefect.state-type")?;
        let timestamp = field("prefect.state-timestamp")
            .or_else(|| event.get("occurred").and_then(Value::as_str))
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        Some(StateChange {
            event_id: event
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            flow_run_id: flow_run_id.to_owned(),
            state_type: state_type.to_owned(),
            state_name: field("prefect.state-name").unwrap_or(suffix).to_owned(),
            message: field("prefect.state-message").map(str::to_owned),
            timestamp,
        })
    }
}

/// An open subscription to flow run events.
pub struct EventStream {
    socket: Socket,
}

impl PrefectClient {
    /// Subscribes to flow run state events from now on.
    pub async fn flow_run_events(&self) -> Result<EventStream, PrefectError> {
        // Without an explicit end, Prefect's filter ends at the moment it was made and the
        // stream stays silent. Missed events are the poll's job, so no backfill; `since`
        // allows for some clock difference between the two hosts.
        let since = Utc::now() - chrono::Duration::minutes(1);
        let filter = json!({
            "type": "filter",
            "backfill": false,
            "filter": {
                "event": { "prefix": ["prefect.flow-run."] },
                "occurred": { "since": since.to_rfc3339(), "until": "2999-12-31T00:00:00Z" },
            },
        });
        let socket = self.subscribe("events/out", "event stream", filter).await?;
        Ok(EventStream { socket })
    }
}

impl EventStream {
    /// The next flow run state change. An error ends the stream: Prefect closed it, went
    /// silent through a ping, or sent something unreadable.
    pub async fn next(&mut self) -> Result<StateChange, PrefectError> {
        loop {
            let event = self.socket.next_of("event").await?;
            if let Some(change) = StateChange::from_event(&event) {
                return Ok(change);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_run_state_events_are_read_and_others_skipped() {
        let event = json!({
            "id": "5d8f0c1e-0000-4000-8000-000000000001",
            "occurred": "2026-11-21T10:00:01.5Z",
            "event": "prefect.flow-run.Late",
            "resource": {
                "prefect.resource.id": "prefect.flow-run.0b7c6a0e-5d0f-4c59-9d7e-1a2b3c4d5e6f",
                "prefect.state-type": "SCHEDULED",
                "prefect.state-name": "Late",
                "prefect.state-message": "",
                "prefect.state-timestamp": "2026-11-21T10:00:00.25+00:00"
            }
        });
        let change = StateChange::from_event(&event).unwrap();
        assert_eq!(change.flow_run_id, "0b7c6a0e-5d0f-4c59-9d7e-1a2b3c4d5e6f");
        assert_eq!(change.state_type, "SCHEDULED");
        assert_eq!(change.state_name, "Late");
        assert_eq!(change.message, None);
        assert_eq!(
            change.timestamp.unwrap().to_rfc3339(),
            "2026-11-21T10:00:00.250+00:00"
        );
        let other = json!({ "event": "prefect.task-run.Running", "resource": {} });
        assert_eq!(StateChange::from_event(&other), None);
    }
}

//! Prefect's event stream: flow run state changes as they happen.
//!
//! `wss://…/api/events/out` speaks the `prefect` subprotocol: the client sends an `auth`
//! message (the API key or auth string, or null), then a `filter`; the server answers with
//! `{"type": "event", "event": {…}}` messages. Flowdeck asks for flow run events only.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{PrefectClient, PrefectError};

/// How long the stream may stay silent before Flowdeck pings it; a second silence of this
/// length ends it as dead.
const QUIET: Duration = Duration::from_secs(20);
/// Bounds the connection and the auth handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// `http(s)://host/api` → `ws(s)://host/api/events/out`.
fn socket_url(base_url: &str) -> Result<String, PrefectError> {
    let rest = if let Some(rest) = base_url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base_url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        return Err(PrefectError::Garbage(
            "PREFECT_API_URL must start with http:// or https://".into(),
        ));
    };
    Ok(format!("{rest}/events/out"))
}

fn unavailable(what: &str) -> impl Fn(tokio_tungstenite::tungstenite::Error) -> PrefectError + '_ {
    move |e| PrefectError::Unavailable(format!("event stream {what}: {e}"))
}

impl PrefectClient {
    /// Subscribes to flow run state events from now on.
    pub async fn flow_run_events(&self) -> Result<EventStream, PrefectError> {
        let mut request = socket_url(&self.base_url)?
            .into_client_request()
            .map_err(unavailable("address"))?;
        request
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static("prefect"));
        let connect = async {
            let (mut socket, _) = tokio_tungstenite::connect_async(request)
                .await
                .map_err(unavailable("connection"))?;
            let auth = json!({ "type": "auth", "token": self.socket_token });
            socket
                .send(Message::text(auth.to_string()))
                .await
                .map_err(unavailable("auth"))?;
            let answer = next_json(&mut socket).await?;
            if answer.get("type").and_then(Value::as_str) != Some("auth_success") {
                return Err(PrefectError::Rejected {
                    status: 401,
                    message: "Prefect refused the event stream's credential".into(),
                });
            }
            // Without an explicit end, Prefect's filter ends at the moment it was made and
            // the stream stays silent.
            // Missed events are the poll's job, so no backfill; `since` allows for some
            // clock difference between the two hosts.
            let since = Utc::now() - chrono::Duration::minutes(1);
            let filter = json!({
                "type": "filter",
                "backfill": false,
                "filter": {
                    "event": { "prefix": ["prefect.flow-run."] },
                    "occurred": { "since": since.to_rfc3339(), "until": "2999-12-31T00:00:00Z" },
                },
            });
            socket
                .send(Message::text(filter.to_string()))
                .await
                .map_err(unavailable("filter"))?;
            Ok(EventStream { socket })
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| PrefectError::Unavailable("event stream: timed out".into()))?
    }
}

/// The next JSON text message; pings and pongs are skipped.
async fn next_json(socket: &mut WebSocketStream<MaybeTlsStream<TcpStream>>) -> Result<Value, PrefectError> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(text.as_str())
                    .map_err(|e| PrefectError::Garbage(format!("event stream: {e}")));
            }
            Some(Ok(Message::Close(_))) | None => {
                return Err(PrefectError::Unavailable("event stream closed".into()));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(unavailable("read")(e)),
        }
    }
}

impl EventStream {
    /// The next flow run state change. An error ends the stream: Prefect closed it, went
    /// silent through a ping, or sent something unreadable.
    pub async fn next(&mut self) -> Result<StateChange, PrefectError> {
        let mut pinged = false;
        loop {
            let message = match tokio::time::timeout(QUIET, next_json(&mut self.socket)).await {
                Ok(message) => message?,
                Err(_) if !pinged => {
                    pinged = true;
                    self.socket
                        .send(Message::Ping(Default::default()))
                        .await
                        .map_err(unavailable("ping"))?;
                    continue;
                }
                Err(_) => return Err(PrefectError::Unavailable("event stream went silent".into())),
            };
            pinged = false;
            if message.get("type").and_then(Value::as_str) == Some("event")
                && let Some(change) = message.get("event").and_then(StateChange::from_event)
            {
                return Ok(change);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_url_follows_the_api_url() {
        assert_eq!(
            socket_url("http://127.0.0.1:4200/api").unwrap(),
            "ws://127.0.0.1:4200/api/events/out"
        );
        assert_eq!(
            socket_url("https://api.prefect.cloud/api/accounts/a/workspaces/w").unwrap(),
            "wss://api.prefect.cloud/api/accounts/a/workspaces/w/events/out"
        );
        assert!(socket_url("ftp://x").is_err());
    }

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

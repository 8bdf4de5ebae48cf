//! Prefect's websockets (`/events/out`, `/logs/out`): the `prefect` subprotocol.
//!
//! The client sends an `auth` message (the API key or auth string, or null) and waits for
//! `auth_success`, then sends a `filter`; the server answers with messages of one type
//! (`{"type": "event", "event": {…}}`, `{"type": "log", "log": {…}}`). A quiet socket is
//! pinged once; a second silence ends it as dead.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{PrefectClient, PrefectError};

/// How long a socket may stay silent before Flowdeck pings it; a second silence of this
/// length ends it as dead.
const QUIET: Duration = Duration::from_secs(20);
/// Bounds the connection and the auth handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An open, authenticated and filtered subscription.
pub(super) struct Socket {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// What it streams, for errors: `event stream`, `log stream`.
    what: &'static str,
}

/// `http(s)://host/api` → `ws(s)://host/api/{path}`.
pub(super) fn socket_url(base_url: &str, path: &str) -> Result<String, PrefectError> {
    let rest = if let Some(rest) = base_url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base_url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        return Err(PrefectError::Garbage(
            "PREFECT_API_URL must start with http:// or https://".into(),
        ));
    };
    Ok(format!("{rest}/{path}"))
}

fn unavailable(
    what: &'static str,
    step: &'static str,
) -> impl Fn(tokio_tungstenite::tungstenite::Error) -> PrefectError {
    move |e| PrefectError::Unavailable(format!("{what} {step}: {e}"))
}

impl PrefectClient {
    /// Opens `path` (`events/out`), authenticates and sends `filter` (the whole message).
    pub(super) async fn subscribe(
        &self,
        path: &str,
        what: &'static str,
        filter: Value,
    ) -> Result<Socket, PrefectError> {
        let mut request = socket_url(&self.base_url, path)?
            .into_client_request()
            .map_err(unavailable(what, "address"))?;
        request
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static("prefect"));
        let connect = async {
            let (socket, _) = tokio_tungstenite::connect_async(request)
                .await
                .map_err(unavailable(what, "connection"))?;
            let mut socket = Socket { socket, what };
            let auth = json!({ "type": "auth", "token": self.socket_token });
            socket.send(&auth, "auth").await?;
            let answer = socket.next_json().await?;
            if answer.get("type").and_then(Value::as_str) != Some("auth_success") {
                return Err(PrefectError::Rejected {
                    status: 401,
                    message: format!("Prefect refused the {what}'s credential"),
                });
            }
            socket.send(&filter, "filter").await?;
            Ok(socket)
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| PrefectError::Unavailable(format!("{what}: timed out")))?
    }
}

impl Socket {
    async fn send(&mut self, message: &Value, step: &'static str) -> Result<(), PrefectError> {
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .map_err(unavailable(self.what, step))
    }

    /// The next JSON text message; pings and pongs are skipped.
    async fn next_json(&mut self) -> Result<Value, PrefectError> {
        loop {
            match self.socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(text.as_str())
                        .map_err(|e| PrefectError::Garbage(format!("{}: {e}", self.what)));
                }
                Some(Ok(Message::Close(_))) | None => {
                    return Err(PrefectError::Unavailable(format!("{} closed", self.what)));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(unavailable(self.what, "read")(e)),
            }
        }
    }

    /// The payload of the next message of type `kind` (`message[kind]`). An error ends the
    /// socket: Prefect closed it, went silent through a ping, or sent something unreadable.
    pub(super) async fn next_of(&mut self, kind: &str) -> Result<Value, PrefectError> {
        let mut pinged = false;
        loop {
            let mut message = match tokio::time::timeout(QUIET, self.next_json()).await {
                Ok(message) => message?,
                Err(_) if !pinged => {
                    pinged = true;
                    self.socket
                        .send(Message::Ping(Default::default()))
                        .await
                        .map_err(unavailable(self.what, "ping"))?;
                    continue;
                }
                Err(_) => return Err(PrefectError::Unavailable(format!("{} went silent", self.what))),
            };
            pinged = false;
            if message.get("type").and_then(Value::as_str) == Some(kind)
                && let Some(payload) = message.get_mut(kind)
            {
                return Ok(payload.take());
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
            socket_url("http://127.0.0.1:4200/api", "events/out").unwrap(),
            "ws://127.0.0.1:4200/api/events/out"
        );
        assert_eq!(
            socket_url(
                "https://api.prefect.cloud/api/accounts/a/workspaces/w",
                "logs/out"
            )
            .unwrap(),
            "wss://api.prefect.cloud/api/accounts/a/workspaces/w/logs/out"
        );
        assert!(socket_url("ftp://x", "events/out").is_err());
    }
}

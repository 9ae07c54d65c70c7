//! A minimal Socket.IO v5 client over Engine.IO v4 on a websocket: just what the load
//! generator needs (connect with auth, emit with ack, events, heartbeat), lean enough that
//! thousands of them cost the measuring machine little: frames are read, and sent, by the task
//! that awaits them (no hop through a channel or a writer task) and payloads are decoded into
//! the few fields the checks need, borrowing from the frame.

use std::borrow::Cow;

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// What arrives on a socket: the event name or ack id, and the payload's JSON text.
#[derive(Debug)]
pub enum Incoming {
    Event(String, String),
    Ack(u64, String),
}

/// The fields of an event or ack payload that the scenarios read.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload<'a> {
    #[serde(borrow)]
    pub message_id: Option<Cow<'a, str>>,
    pub seq: Option<u64>,
    pub count: Option<u64>,
    #[serde(borrow)]
    pub token: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub content: Option<Cow<'a, str>>,
    pub ok: Option<bool>,
}

impl<'a> Payload<'a> {
    /// The fields of `json`; all absent if it is not an object.
    pub fn of(json: &'a str) -> Self {
        serde_json::from_str(json).unwrap_or_default()
    }
}

/// What Chrome sends with a websocket request besides the handshake's own headers (no cookies):
/// a browser's connection, as the frontends this server is for open them.
pub const BROWSER_HEADERS: [(&str, &str); 7] = [
    ("origin", "http://localhost:5173"),
    ("pragma", "no-cache"),
    ("cache-control", "no-cache"),
    (
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    ),
    ("accept-encoding", "gzip, deflate, br, zstd"),
    ("accept-language", "en-US,en;q=0.9"),
    ("sec-websocket-extensions", "permessage-deflate; client_max_window_bits"),
];

/// A connected socket: send with `emit_with_ack`, receive with `recv` (which also answers the
/// server's pings, so a socket nobody reads must be `hold`-ed).
pub struct Socket {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_ack: u64,
}

impl Socket {
    /// Opens `ws://{addr}/socket.io/?EIO=4&transport=websocket` and joins namespace `/` with
    /// `{ token }` as auth; fails with the server's connect_error message.
    pub async fn connect(addr: &str, token: &str) -> Result<Socket, String> {
        Self::connect_with_headers(addr, token, &[]).await
    }

    /// As [`Socket::connect`], with these headers added to the websocket request.
    pub async fn connect_with_headers(
        addr: &str,
        token: &str,
        headers: &[(&'static str, &'static str)],
    ) -> Result<Socket, String> {
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let mut request = url.into_client_request().map_err(|e| e.to_string())?;
        for (name, value) in headers {
            request.headers_mut().insert(*name, HeaderValue::from_static(value));
        }
        // TCP_NODELAY, as browsers and Node's `ws` set it.
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(request, None, true)
            .await
            .map_err(|e| e.to_string())?;
        // Engine.IO open packet, then the Socket.IO connect.
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.starts_with('0') => {}
            other => return Err(format!("no open packet: {other:?}")),
        }
        let connect = format!("40{}", serde_json::json!({ "token": token }));
        ws.send(Message::text(connect)).await.map_err(|e| e.to_string())?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.starts_with("40") => break,
                Some(Ok(Message::Text(t))) if t.starts_with("44") => return Err(t[2..].to_string()),
                Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                    ws.send(Message::text("3")).await.map_err(|e| e.to_string())?;
                }
                other => return Err(format!("no connect packet: {other:?}")),
            }
        }
        Ok(Socket { ws, next_ack: 0 })
    }

    /// The next event or ack; `None` once the connection is closed.
    pub async fn recv(&mut self) -> Option<Incoming> {
        loop {
            let Message::Text(text) = self.ws.next().await?.ok()? else { continue };
            let text = text.as_str();
            if text == "2" {
                self.ws.send(Message::text("3")).await.ok()?;
            } else if let Some(incoming) = decode(text) {
                return Some(incoming);
            }
        }
    }

    /// Keeps the connection alive (answering pings) with nobody reading it.
    pub fn hold(mut self) {
        tokio::spawn(async move { while self.recv().await.is_some() {} });
    }

    /// Emits `event` with `payload`, asking for an ack; returns the ack id to wait for.
    /// A failed send shows as the connection closing at the next `recv`.
    pub async fn emit_with_ack(&mut self, event: &str, payload: &serde_json::Value) -> u64 {
        self.next_ack += 1;
        let id = self.next_ack;
        let _ = self.ws.send(Message::text(format!("42{id}{}", serde_json::json!([event, payload])))).await;
        id
    }
}

/// An event (`42["name",payload]`) or an ack (`43id[payload]`); `None` for anything else.
fn decode(text: &str) -> Option<Incoming> {
    if let Some(rest) = text.strip_prefix("42") {
        let (name, payload): (Cow<str>, &RawValue) = serde_json::from_str(rest).ok()?;
        Some(Incoming::Event(name.into_owned(), payload.get().to_owned()))
    } else if let Some(rest) = text.strip_prefix("43") {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let id = rest[..digits].parse().ok()?;
        let args: Vec<&RawValue> = serde_json::from_str(&rest[digits..]).ok()?;
        Some(Incoming::Ack(id, args.first().map_or("null", |a| a.get()).to_owned()))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_events_and_acks() {
        let Some(Incoming::Event(name, payload)) =
            decode(r#"42["chat:stream:token",{"messageId":"m","token":"a\nb","seq":3}]"#)
        else {
            panic!("not an event")
        };
        assert_eq!(name, "chat:stream:token");
        let p = Payload::of(&payload);
        assert_eq!((p.message_id.as_deref(), p.token.as_deref(), p.seq), (Some("m"), Some("a\nb"), Some(3)));
        let Some(Incoming::Ack(7, payload)) = decode(r#"437[{"ok":true,"messageId":"x"}]"#) else {
            panic!("not an ack")
        };
        assert_eq!(Payload::of(&payload).ok, Some(true));
        assert!(decode("43[]").is_none());
        assert!(decode("3").is_none());
    }
}

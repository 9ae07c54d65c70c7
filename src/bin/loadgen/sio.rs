//! A minimal Socket.IO v5 client over Engine.IO v4 on a websocket: just what the load
//! generator needs (connect with auth, emit with ack, events, heartbeat), lean enough that
//! thousands of them cost the measuring machine little.

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// What arrives on a socket, decoded.
#[derive(Debug)]
pub enum Incoming {
    Event(String, Value),
    Ack(u64, Value),
}

/// A connected socket: send with `emit`, receive on `incoming`.
pub struct Socket {
    out: mpsc::UnboundedSender<String>,
    pub incoming: mpsc::UnboundedReceiver<Incoming>,
    next_ack: u64,
}

impl Socket {
    /// Opens `ws://{addr}/socket.io/?EIO=4&transport=websocket` and joins namespace `/` with
    /// `{ token }` as auth; fails with the server's connect_error message.
    pub async fn connect(addr: &str, token: &str) -> Result<Socket, String> {
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        // TCP_NODELAY, as browsers and Node's `ws` set it.
        let (ws, _) =
            tokio_tungstenite::connect_async_with_config(url, None, true).await.map_err(|e| e.to_string())?;
        let (mut sink, mut stream) = ws.split();
        // Engine.IO open packet, then the Socket.IO connect.
        match stream.next().await {
            Some(Ok(Message::Text(t))) if t.starts_with('0') => {}
            other => return Err(format!("no open packet: {other:?}")),
        }
        let connect = format!("40{}", serde_json::json!({ "token": token }));
        sink.send(Message::text(connect)).await.map_err(|e| e.to_string())?;
        loop {
            match stream.next().await {
                Some(Ok(Message::Text(t))) if t.starts_with("40") => break,
                Some(Ok(Message::Text(t))) if t.starts_with("44") => return Err(t[2..].to_string()),
                Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                    sink.send(Message::text("3")).await.map_err(|e| e.to_string())?;
                }
                other => return Err(format!("no connect packet: {other:?}")),
            }
        }
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let pong = out_tx.clone();
        tokio::spawn(async move {
            while let Some(text) = out_rx.recv().await {
                if sink.send(Message::text(text)).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(text) = msg else { continue };
                let text = text.as_str();
                if text == "2" {
                    let _ = pong.send("3".into());
                } else if let Some(rest) = text.strip_prefix("42") {
                    if let Ok(Value::Array(mut parts)) = serde_json::from_str::<Value>(rest) {
                        if parts.len() >= 2 {
                            let payload = parts.swap_remove(1);
                            let name = parts[0].as_str().unwrap_or("").to_owned();
                            if in_tx.send(Incoming::Event(name, payload)).is_err() {
                                break;
                            }
                        }
                    }
                } else if let Some(rest) = text.strip_prefix("43") {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    let id = digits.parse().unwrap_or(0);
                    if let Ok(Value::Array(mut parts)) = serde_json::from_str::<Value>(&rest[digits.len()..])
                    {
                        let payload = if parts.is_empty() { Value::Null } else { parts.swap_remove(0) };
                        if in_tx.send(Incoming::Ack(id, payload)).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Ok(Socket { out: out_tx, incoming: in_rx, next_ack: 0 })
    }

    /// Emits `event` with `payload`, asking for an ack; returns the ack id to wait for.
    pub fn emit_with_ack(&mut self, event: &str, payload: &Value) -> u64 {
        self.next_ack += 1;
        let id = self.next_ack;
        let _ = self.out.send(format!("42{id}{}", serde_json::json!([event, payload])));
        id
    }
}

//! Server-sent events as OpenAI-compatible servers stream them: `data: {json}` lines, a blank
//! line between events, `data: [DONE]` at the end. Comments (`:`) and other fields are skipped.

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};

/// Most bytes one event may take before the stream is called malformed (a server that never
/// sends a newline must not grow our buffer without end).
const MAX_EVENT_BYTES: usize = 1 << 20;

/// Why a stream could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseError {
    /// The connection failed mid-stream.
    Read(String),
    /// A line that is not JSON, or an event too large.
    Malformed(String),
}

/// The JSON payload of each `data:` line, until `[DONE]` or the end of the body.
pub fn events<S, E>(body: S) -> impl Stream<Item = Result<serde_json::Value, SseError>> + Send
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    async_stream::stream! {
        let mut body = std::pin::pin!(body);
        let mut buffer = BytesMut::new();
        loop {
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line = buffer.split_to(end + 1);
                match data_of(&line) {
                    Line::Skip => {}
                    Line::Done => return,
                    Line::Data(json) => match serde_json::from_slice(json) {
                        Ok(value) => yield Ok(value),
                        Err(e) => {
                            yield Err(SseError::Malformed(format!("a stream event is not JSON: {e}")));
                            return;
                        }
                    },
                }
            }
            if buffer.len() > MAX_EVENT_BYTES {
                yield Err(SseError::Malformed("a stream event is over 1 MiB".into()));
                return;
            }
            match body.next().await {
                Some(Ok(bytes)) => buffer.extend_from_slice(&bytes),
                Some(Err(e)) => {
                    yield Err(SseError::Read(e.to_string()));
                    return;
                }
                // A last line without its newline still counts.
                None if !buffer.is_empty() => buffer.extend_from_slice(b"\n"),
                None => return,
            }
        }
    }
}

enum Line<'a> {
    Skip,
    Done,
    Data(&'a [u8]),
}

fn data_of(line: &[u8]) -> Line<'_> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(data) = line.strip_prefix(b"data:") else {
        return Line::Skip;
    };
    let data = data.strip_prefix(b" ").unwrap_or(data);
    match data {
        b"" => Line::Skip,
        b"[DONE]" => Line::Done,
        json => Line::Data(json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(parts: &[&str]) -> Vec<Result<serde_json::Value, SseError>> {
        let owned: Vec<Result<Bytes, String>> =
            parts.iter().map(|p| Ok(Bytes::copy_from_slice(p.as_bytes()))).collect();
        events(futures::stream::iter(owned)).collect().await
    }

    #[tokio::test]
    async fn events_split_anywhere_are_read_whole() {
        let got = read(&[
            "da",
            "ta: {\"a\":",
            "1}\r\n\r\n: comment\nevent: x\ndata: {\"a\":2}\n\ndata: [DONE]\n\ndata: {\"a\":3}\n",
        ])
        .await;
        assert_eq!(got, vec![Ok(serde_json::json!({"a":1})), Ok(serde_json::json!({"a":2}))]);
    }

    #[tokio::test]
    async fn a_line_that_is_not_json_ends_the_stream_with_an_error() {
        let got = read(&["data: {\"a\":1}\n\ndata: {oops\n\ndata: {\"a\":2}\n\n"]).await;
        assert_eq!(got.len(), 2);
        assert!(matches!(got[1], Err(SseError::Malformed(_))));
    }

    #[tokio::test]
    async fn the_last_line_needs_no_newline() {
        assert_eq!(read(&["data: {\"a\":1}"]).await, vec![Ok(serde_json::json!({"a":1}))]);
    }
}

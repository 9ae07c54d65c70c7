//! The PROXY protocol header (HAProxy's `send-proxy-v2`, or v1's text line) that a trusted
//! balancer sends before anything else on a connection, naming the client it carries. Read
//! only from peers in `TRUSTED_PROXIES` (from anyone else it would be a client naming itself),
//! within the header timeout; the bytes read past it are handed on to HTTP.

use std::net::IpAddr;

use bytes::{Bytes, BytesMut};
use ppp::{v1, v2};
use tokio::io::{AsyncRead, AsyncReadExt};

/// v2's fixed opening: twelve bytes no HTTP request starts with.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// v2's fixed part: the signature, version and command, family, and the length of the rest.
const V2_FIXED_BYTES: usize = 16;
/// v1's opening and longest line (the specification's 107 bytes, CRLF included).
const V1_PREFIX: &[u8; 6] = b"PROXY ";
const V1_MAX_BYTES: usize = 107;

/// Why a trusted peer's connection was closed before HTTP.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(String),
    #[error("the connection closed during its PROXY protocol header")]
    Closed,
    #[error("reading the PROXY protocol header: {0}")]
    Read(#[from] std::io::Error),
}

/// What opened a trusted peer's connection.
#[derive(Debug, PartialEq, Eq)]
pub struct Opening {
    /// The client the header names; `None` without a header, or for one that names nobody
    /// (v2 `LOCAL`, as balancers' health checks send, v1 `UNKNOWN`, a UNIX socket).
    pub client: Option<IpAddr>,
    /// The bytes read after the header: the start of the first HTTP request.
    pub rest: Bytes,
}

/// How far the bytes read so far go towards a header.
enum Framing {
    /// Not a PROXY header: plain HTTP.
    NoHeader,
    /// A header of this many bytes.
    Header(usize),
    NeedMore,
}

fn framing(read: &[u8]) -> Result<Framing, ProxyHeaderError> {
    let opens =
        |prefix: &[u8]| read[..read.len().min(prefix.len())] == prefix[..read.len().min(prefix.len())];
    if opens(V2_SIGNATURE) {
        if read.len() < V2_FIXED_BYTES {
            return Ok(Framing::NeedMore);
        }
        let rest = usize::from(u16::from_be_bytes([read[14], read[15]]));
        return Ok(if read.len() < V2_FIXED_BYTES + rest {
            Framing::NeedMore
        } else {
            Framing::Header(V2_FIXED_BYTES + rest)
        });
    }
    if opens(V1_PREFIX) {
        return match read.windows(2).position(|w| w == b"\r\n") {
            Some(at) if at + 2 <= V1_MAX_BYTES => Ok(Framing::Header(at + 2)),
            Some(_) => Err(ProxyHeaderError::Malformed("a v1 line over 107 bytes".into())),
            None if read.len() >= V1_MAX_BYTES => {
                Err(ProxyHeaderError::Malformed("a v1 line over 107 bytes".into()))
            }
            None => Ok(Framing::NeedMore),
        };
    }
    Ok(Framing::NoHeader)
}

/// The client a complete header names.
fn client_of(header: &[u8]) -> Result<Option<IpAddr>, ProxyHeaderError> {
    let malformed = |e: String| ProxyHeaderError::Malformed(e);
    if header.starts_with(V2_SIGNATURE) {
        let header = v2::Header::try_from(header).map_err(|e| malformed(e.to_string()))?;
        if header.command == v2::Command::Local {
            return Ok(None);
        }
        return Ok(match header.addresses {
            v2::Addresses::IPv4(a) => Some(a.source_address.into()),
            v2::Addresses::IPv6(a) => Some(a.source_address.into()),
            v2::Addresses::Unix(_) | v2::Addresses::Unspecified => None,
        });
    }
    let header = v1::Header::try_from(header).map_err(|e| malformed(e.to_string()))?;
    Ok(match header.addresses {
        v1::Addresses::Tcp4(a) => Some(a.source_address.into()),
        v1::Addresses::Tcp6(a) => Some(a.source_address.into()),
        v1::Addresses::Unknown => None,
    })
}

/// Reads a trusted peer's connection up to the end of its PROXY header, if it opens with one.
/// (The caller bounds the time.)
pub async fn read_opening(conn: &mut (impl AsyncRead + Unpin)) -> Result<Opening, ProxyHeaderError> {
    let mut read = BytesMut::with_capacity(256);
    loop {
        match framing(&read)? {
            Framing::NoHeader => return Ok(Opening { client: None, rest: read.freeze() }),
            Framing::Header(len) => {
                let rest = read.split_off(len).freeze();
                return Ok(Opening { client: client_of(&read)?, rest });
            }
            Framing::NeedMore => {}
        }
        if conn.read_buf(&mut read).await? == 0 {
            return Err(ProxyHeaderError::Closed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use super::*;

    fn v2_header(client: &str, command: v2::Command) -> Vec<u8> {
        let src: SocketAddr = client.parse().unwrap();
        let dst: SocketAddr = if src.is_ipv4() { "127.0.0.1:3000" } else { "[::1]:3000" }.parse().unwrap();
        let version_command = v2::Version::Two | command;
        v2::Builder::with_addresses(version_command, v2::Protocol::Stream, (src, dst)).build().unwrap()
    }

    /// Reads `bytes` as a peer sends them in pieces of `piece` bytes; `rest` is then everything
    /// after the header, what was read with it and what was left on the connection.
    async fn read(bytes: &[u8], piece: usize) -> Result<Opening, ProxyHeaderError> {
        let (mut ours, mut theirs) = tokio::io::duplex(piece);
        let chunks: Vec<Vec<u8>> = bytes.chunks(piece).map(<[u8]>::to_vec).collect();
        tokio::spawn(async move {
            for chunk in chunks {
                let _ = tokio::io::AsyncWriteExt::write_all(&mut theirs, &chunk).await;
                tokio::task::yield_now().await;
            }
        });
        let opening = read_opening(&mut ours).await?;
        let mut rest = opening.rest.to_vec();
        tokio::io::AsyncReadExt::read_to_end(&mut ours, &mut rest).await?;
        Ok(Opening { client: opening.client, rest: rest.into() })
    }

    #[tokio::test]
    async fn a_v2_header_names_the_client_and_the_request_after_it_is_kept() {
        let mut bytes = v2_header("203.0.113.9:51000", v2::Command::Proxy);
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        for piece in [1, 5, 1000] {
            let opening = read(&bytes, piece).await.unwrap();
            assert_eq!(
                opening.client,
                Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9))),
                "in pieces of {piece}"
            );
            assert!(opening.rest.starts_with(b"GET / HTTP/1.1"), "in pieces of {piece}");
        }
        let v6 = read(&v2_header("[2001:db8::7]:1", v2::Command::Proxy), 3).await.unwrap();
        assert_eq!(v6.client, Some("2001:db8::7".parse().unwrap()));
    }

    #[tokio::test]
    async fn a_health_check_names_nobody() {
        assert_eq!(read(&v2_header("10.0.0.1:1", v2::Command::Local), 64).await.unwrap().client, None);
        assert_eq!(read(b"PROXY UNKNOWN\r\nGET /", 4).await.unwrap().client, None);
    }

    #[tokio::test]
    async fn a_v1_line_names_the_client() {
        let opening =
            read(b"PROXY TCP4 198.51.100.4 127.0.0.1 40000 3000\r\nGET / HTTP/1.1\r\n", 7).await.unwrap();
        assert_eq!(opening.client, Some("198.51.100.4".parse().unwrap()));
        assert_eq!(&opening.rest[..], b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn plain_http_passes_untouched() {
        let opening = read(b"GET /healthz HTTP/1.1\r\n\r\n", 3).await.unwrap();
        assert_eq!(opening.client, None);
        assert_eq!(&opening.rest[..], b"GET /healthz HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn malformed_or_cut_headers_are_refused() {
        assert!(matches!(
            read(b"PROXY TCP4 not-an-address\r\n", 64).await,
            Err(ProxyHeaderError::Malformed(_))
        ));
        let endless = [b"PROXY ".as_slice(), &[b'x'; 200]].concat();
        assert!(matches!(read(&endless, 64).await, Err(ProxyHeaderError::Malformed(_))));
        let header = v2_header("203.0.113.9:1", v2::Command::Proxy);
        assert!(matches!(read(&header[..20], 8).await, Err(ProxyHeaderError::Closed)));
        let mut bad_version = header.clone();
        bad_version[12] = 0x31;
        assert!(matches!(read(&bad_version, 64).await, Err(ProxyHeaderError::Malformed(_))));
    }
}

//! Whether a request comes from the page it was sent to: its `Origin` names the host and port
//! of its own `Host`. A browser page served by this server, and python-socketio's websocket
//! client (which sends the server's own origin), are same-origin; any other site is not.

/// Whether `origin` (`scheme://host[:port]`) names the host and port of the request's `Host`.
pub fn is_same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else { return false };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    let strip = |a: &str| a.strip_suffix(default_port).unwrap_or(a).to_ascii_lowercase();
    !host.is_empty() && strip(authority) == strip(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ports_match_either_way() {
        assert!(is_same_origin("http://chat.example", "chat.example:80"));
        assert!(is_same_origin("https://chat.example", "chat.example"));
        assert!(is_same_origin("HTTP://Chat.Example:8080", "chat.example:8080"));
        assert!(!is_same_origin("http://chat.example", "chat.example:8080"));
        assert!(!is_same_origin("ws://chat.example", "chat.example"));
    }
}

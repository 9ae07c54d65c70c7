//! Payload validation: any bytes, as JSON or as text, through the parsers every client payload
//! goes through. They must answer Ok or a named INVALID_INPUT, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postchat::domain::{ClientMessageId, MessageText, Platform, SessionId};
use postchat::socket::events::{parse_chat_message, parse_session_id};

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = parse_chat_message(Some(value.clone()), 8_000);
        let _ = parse_session_id(Some(value));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = MessageText::parse(text.to_owned(), 8_000);
        let _ = SessionId::parse(text);
        let _ = ClientMessageId::parse(text);
        for platform in Platform::ALL {
            let fitted = platform.fit(text);
            assert!(platform.fits(&fitted), "{platform}: fit() left {} > {}", platform.count(&fitted), platform.limit());
        }
    }
});

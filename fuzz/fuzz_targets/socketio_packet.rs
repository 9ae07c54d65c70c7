//! Event decoding: any text as a Socket.IO packet, through socketioxide's own parser, then the
//! event's payload through `TryData<Value>`'s decoding and our validation, as a handler sees it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postchat::socket::events::{parse_chat_message, parse_session_id};
use socketioxide_core::packet::PacketData;
use socketioxide_core::parser::{Parse, ParseConfig, ParserState};
use socketioxide_parser_common::CommonParser;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let parser = CommonParser;
    let config = ParseConfig::default();
    let state = ParserState::default();
    let Ok(packet) = parser.decode_str(&config, &state, text.to_owned().into()) else { return };
    if let PacketData::Event(mut value, _) | PacketData::BinaryEvent(mut value, _) = packet.inner {
        if parser.read_event(&value).is_err() {
            return;
        }
        let payload = parser.decode_value::<serde_json::Value>(&mut value, true).ok();
        let _ = parse_chat_message(payload.clone(), 8_000);
        let _ = parse_session_id(payload);
    }
});

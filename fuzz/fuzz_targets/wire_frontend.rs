//! Client bytes through startup framing, tagged framing and every typed
//! frontend decoder: no panic, and nothing buffered beyond the caps.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgveil_wire::{frontend::FrontendMessage, startup, FrameReader};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let _ = startup::parse_startup(&mut buf);
    let reader = FrameReader::new(4096);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = reader.parse(&mut buf) {
        if let Ok(msg) = FrontendMessage::decode(&frame) {
            // Re-encoding what decoded must reproduce the same message.
            match msg {
                FrontendMessage::Parse(p) => assert_eq!(
                    FrontendMessage::decode(&p.encode()).ok(),
                    Some(FrontendMessage::Parse(p))
                ),
                FrontendMessage::Bind(b) => assert_eq!(
                    FrontendMessage::decode(&b.encode()).ok(),
                    Some(FrontendMessage::Bind(b))
                ),
                _ => {}
            }
        }
    }
});

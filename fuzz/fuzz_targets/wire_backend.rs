//! Server bytes through framing and the backend decoders pgveil uses.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgveil_wire::{backend, FrameReader};

fuzz_target!(|data: &[u8]| {
    let reader = FrameReader::new(4096);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = reader.parse(&mut buf) {
        let _ = backend::decode_data_row(&frame);
        let _ = backend::decode_row_description(&frame);
        let _ = backend::decode_parameter_description(&frame);
        let _ = backend::ErrorFields::decode(&frame);
        let _ = backend::sasl_mechanisms(&frame);
        let _ = backend::BackendKeyData::decode(&frame);
        let _ = backend::TransactionStatus::decode(&frame);
    }
});

//! Fuzz target: arbitrary bytes through `wulian_mqtt::decode` at both protocol levels, as a
//! broker would see them from a hostile client. Must never panic; whatever decodes must
//! survive encode → decode → encode unchanged (the same check as the stable replay test,
//! `crates/wulian-mqtt/tests/fuzz_corpus.rs`).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use wulian_mqtt::{Packet, Protocol, decode, encode};

const MAX: usize = 1 << 20;

fn round_trip(packet: &Packet, protocol: Protocol) {
    let mut first = BytesMut::new();
    if encode(packet, protocol, &mut first).is_err() {
        return; // e.g. AUTH on 3.1.1: refusing to encode is fine
    }
    let wire = first.clone();
    let again = decode(&mut first, protocol, MAX)
        .unwrap_or_else(|e| panic!("re-decode of {packet:?} failed: {e}"))
        .unwrap_or_else(|| panic!("re-decode of {packet:?} incomplete"));
    assert!(first.is_empty(), "re-decode left bytes for {packet:?}");
    let mut second = BytesMut::new();
    encode(&again, protocol, &mut second).expect("re-encode");
    assert_eq!(
        wire, second,
        "encoding not stable for {packet:?} -> {again:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    for protocol in [Protocol::V311, Protocol::V5] {
        let mut buf = BytesMut::from(data);
        // Each decoded packet consumes at least 2 bytes, so this ends.
        while let Ok(Some(packet)) = decode(&mut buf, protocol, MAX) {
            let level = match &packet {
                Packet::Connect(c) => c.protocol,
                _ => protocol,
            };
            round_trip(&packet, level);
        }
    }
});

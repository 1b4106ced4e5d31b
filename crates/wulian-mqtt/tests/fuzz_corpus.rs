//! Replays the fuzzer's seed corpus (`fuzz/corpus/decode/`) through the decoder at both
//! protocol levels on stable Rust, so what the fuzzer once found stays fixed without nightly:
//! no input may panic, and every packet that decodes must survive encode → decode → encode
//! with identical bytes. The fuzz target (`fuzz/fuzz_targets/decode.rs`) checks the same.

use std::path::PathBuf;

use bytes::BytesMut;
use wulian_mqtt::{Packet, Protocol, decode, encode};

const MAX: usize = 1 << 20;

fn round_trip(packet: &Packet, protocol: Protocol) -> Result<(), String> {
    let mut first = BytesMut::new();
    if encode(packet, protocol, &mut first).is_err() {
        return Ok(());
    }
    let wire = first.clone();
    let again = match decode(&mut first, protocol, MAX) {
        Ok(Some(p)) => p,
        Ok(None) => return Err(format!("re-decode of {packet:?} incomplete")),
        Err(e) => return Err(format!("re-decode of {packet:?} failed: {e}")),
    };
    if !first.is_empty() {
        return Err(format!("re-decode of {packet:?} left bytes"));
    }
    let mut second = BytesMut::new();
    encode(&again, protocol, &mut second).map_err(|e| format!("re-encode: {e}"))?;
    if wire != second {
        return Err(format!("encoding not stable: {packet:?} -> {again:?}"));
    }
    Ok(())
}

/// Decodes every packet in `data` at `protocol`; returns how many decoded.
fn replay(data: &[u8], protocol: Protocol) -> Result<usize, String> {
    let mut buf = BytesMut::from(data);
    let mut decoded = 0;
    while let Ok(Some(packet)) = decode(&mut buf, protocol, MAX) {
        let level = match &packet {
            Packet::Connect(c) => c.protocol,
            _ => protocol,
        };
        round_trip(&packet, level)?;
        decoded += 1;
    }
    Ok(decoded)
}

#[test]
fn corpus_decodes_without_panics_and_round_trips() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/decode");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        files.len() >= 20,
        "the seed corpus is missing ({} files)",
        files.len()
    );
    let mut failures = Vec::new();
    let mut decoded = 0;
    for path in &files {
        let data = std::fs::read(path).unwrap();
        for protocol in [Protocol::V311, Protocol::V5] {
            match std::panic::catch_unwind(|| replay(&data, protocol)) {
                Ok(Ok(n)) => decoded += n,
                Ok(Err(e)) => failures.push(format!("{} ({protocol:?}): {e}", path.display())),
                Err(_) => failures.push(format!("{} ({protocol:?}): panicked", path.display())),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The seeds are valid packets: most of them must decode at one level or the other.
    assert!(decoded >= files.len() / 2, "only {decoded} packets decoded");
}

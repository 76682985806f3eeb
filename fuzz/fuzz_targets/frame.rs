//! Fuzzes the transport's frame reader and decoders: any bytes read from a connection, in any
//! split into reads, must yield whole frames, ask for more, or be refused with a typed error,
//! never panic; and every body must decode as a Raft message and as each handshake message, or
//! fail with a typed error.
//!
//! Raw input mostly stops at a length prefix above the limit, so the input is also re-framed:
//! its tail is cut into bodies (their lengths taken from its first bytes), each behind its
//! correct prefix, so the decoders always see fuzzed bodies.
#![no_main]

use bytes::{BufMut, BytesMut};
use libfuzzer_sys::fuzz_target;
use strata_transport::{
    FRAME_BYTES_MAX, FrameError, Hello, LENGTH_BYTES, Welcome, decode_handshake, decode_message,
    split_frame,
};

/// The small limit: the size of a read, so that frames both under and over it are common.
const SMALL_MAX: usize = 64 << 10;

/// Bytes at the front of the input that choose the read sizes and the bodies' lengths.
const HEAD_BYTES: usize = 8;

/// Reads `stream` into a buffer in reads of the sizes `reads` gives (cycled), splitting off
/// and decoding every whole frame after each read, as a connection's reader does.
fn read(stream: &[u8], reads: &[u8], max: usize) {
    let mut buffer = BytesMut::new();
    let mut at = 0;
    let mut sizes = reads.iter().map(|&b| usize::from(b) + 1).cycle();
    let mut consumed = 0;
    while at < stream.len() {
        let n = sizes.next().unwrap_or(stream.len()).min(stream.len() - at);
        buffer.extend_from_slice(&stream[at..at + n]);
        at += n;
        loop {
            let before = buffer.len();
            match split_frame(&mut buffer, max) {
                Ok(Some(body)) => {
                    assert!(body.len() <= max, "a body over the limit came out");
                    assert_eq!(before - buffer.len(), LENGTH_BYTES + body.len());
                    consumed += LENGTH_BYTES + body.len();
                    let _ = decode_message(body.clone());
                    let _ = decode_handshake::<Hello>(body.clone());
                    let _ = decode_handshake::<Welcome>(body);
                }
                Ok(None) => {
                    assert_eq!(buffer.len(), before, "waiting for more consumed bytes");
                    break;
                }
                Err(FrameError::TooLarge { bytes, max: limit }) => {
                    assert!(bytes > limit && limit == max);
                    // The connection closes here.
                    return;
                }
                Err(e) => panic!("split_frame only refuses lengths, got {e}"),
            }
        }
    }
    // Nothing is lost or invented: what was split off plus what waits is what was read.
    assert_eq!(consumed + buffer.len(), stream.len());
}

fuzz_target!(|data: &[u8]| {
    let (head, tail) = data.split_at(data.len().min(HEAD_BYTES));
    let mut framed = BytesMut::with_capacity(tail.len() + LENGTH_BYTES * (head.len() + 1));
    let mut rest = tail;
    for &b in head.iter().chain(std::iter::once(&u8::MAX)) {
        let (body, after) = rest.split_at(rest.len().min(usize::from(b)));
        framed.put_u32_le(u32::try_from(body.len()).expect("at most 255 bytes"));
        framed.extend_from_slice(body);
        rest = after;
    }
    framed.put_u32_le(u32::try_from(rest.len()).expect("fuzz inputs are small"));
    framed.extend_from_slice(rest);
    for stream in [data, &framed[..]] {
        for max in [SMALL_MAX, FRAME_BYTES_MAX] {
            // In the reads the head chooses, and in one read.
            read(stream, head, max);
            read(stream, &[], max);
        }
    }
});

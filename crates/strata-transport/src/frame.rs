//! Frames on the wire (format in `docs/formats/transport.md`): a 4-byte little-endian length,
//! then that many bytes of one protobuf message. A connection opens with a [`Hello`] from the
//! dialer and a [`Welcome`] from the acceptor, then carries Raft [`Message`]s one way.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message as _;
use strata_raft::{Message, NodeId};

/// The protocol version a node speaks; a peer with another is refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// Bytes of a frame's length prefix.
pub const LENGTH_BYTES: usize = 4;

/// The largest frame a node accepts by default: above the biggest append
/// (`Config::append_bytes_max` plus one entry of `Config::entry_bytes_max`, 1 MiB each by
/// default, with their protobuf overhead) and the biggest snapshot chunk (1 MiB of data with the
/// snapshot's metadata). A larger length prefix closes the connection before anything is read.
pub const FRAME_BYTES_MAX: usize = 16 << 20;

/// The most a reader reserves at once for a frame still arriving: 1 MiB, a snapshot chunk's
/// default size; a larger frame grows its buffer as its bytes come.
pub const RESERVE_STEP_BYTES: usize = 1 << 20;

/// Which lane a connection carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Lane {
    /// Votes, appends, heartbeats, reads and their answers.
    Control = 0,
    /// Snapshot chunks (`InstallSnapshot`), which may be 1 MiB each.
    Snapshot = 1,
}

/// The dialer's first frame.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the dialer.
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// The cluster the dialer belongs to.
    #[prost(uint64, tag = "2")]
    pub cluster_id: u64,
    /// The dialer's node id: every message on the connection must be from it.
    #[prost(uint64, tag = "3")]
    pub from: NodeId,
    /// The node the dialer means to reach.
    #[prost(uint64, tag = "4")]
    pub to: NodeId,
    /// The lane the connection carries.
    #[prost(enumeration = "Lane", tag = "5")]
    pub lane: i32,
}

/// The acceptor's answer to a [`Hello`]: accepted, or refused with the reason (then the
/// connection closes).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Welcome {
    /// Accepted.
    #[prost(bool, tag = "1")]
    pub accepted: bool,
    /// Why not, for the dialer's log.
    #[prost(string, tag = "2")]
    pub reason: String,
    /// The acceptor's [`PROTOCOL_VERSION`].
    #[prost(uint32, tag = "3")]
    pub version: u32,
}

/// What is wrong with bytes read from a connection (the connection is closed; nothing reaches
/// Raft).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A length prefix above the limit.
    #[error("a frame of {bytes} bytes, above the limit of {max}")]
    TooLarge {
        /// The length the prefix announced.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A frame that does not decode as the message expected there.
    #[error("a frame that does not decode: {0}")]
    Malformed(String),
}

/// Appends `message` to `out` as one frame.
pub fn encode<M: prost::Message>(message: &M, out: &mut BytesMut) {
    let len = message.encoded_len();
    out.reserve(LENGTH_BYTES + len);
    // A message over 4 GiB cannot be sent as one frame; the frame limit refuses far smaller.
    out.put_u32_le(u32::try_from(len).unwrap_or(u32::MAX));
    message
        .encode(out)
        .expect("a BytesMut grows to fit what it was reserved for");
}

/// Splits the next whole frame's body off the front of `buffer`, if it holds one: `Ok(None)`
/// means more bytes are needed. The body shares `buffer`'s memory (no copy), so the `bytes`
/// fields of a message decoded from it (entries, chunk data) are slices of what was read.
///
/// # Errors
///
/// [`FrameError::TooLarge`] as soon as a length prefix above `max` is read.
pub fn split_frame(buffer: &mut BytesMut, max: usize) -> Result<Option<Bytes>, FrameError> {
    if buffer.len() < LENGTH_BYTES {
        return Ok(None);
    }
    let len = u32::from_le_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]) as usize;
    if len > max {
        return Err(FrameError::TooLarge { bytes: len, max });
    }
    if buffer.len() < LENGTH_BYTES + len {
        // Room for more of this frame, so that it arrives in few reads; in steps, so that a
        // length prefix alone never makes the reader allocate a whole large frame.
        buffer.reserve((LENGTH_BYTES + len - buffer.len()).min(RESERVE_STEP_BYTES));
        return Ok(None);
    }
    buffer.advance(LENGTH_BYTES);
    Ok(Some(buffer.split_to(len).freeze()))
}

/// Decodes a frame's body as a Raft message.
///
/// # Errors
///
/// [`FrameError::Malformed`] if it does not decode.
pub fn decode_message(body: Bytes) -> Result<Message, FrameError> {
    Message::decode(body).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Decodes a frame's body as a handshake message.
///
/// # Errors
///
/// [`FrameError::Malformed`] if it does not decode.
pub fn decode_handshake<M: prost::Message + Default>(body: Bytes) -> Result<M, FrameError> {
    M::decode(body).map_err(|e| FrameError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use strata_raft::MessageType;

    fn message(data: &[u8]) -> Message {
        let mut m = Message {
            msg_type: MessageType::Append as i32,
            from: 1,
            to: 2,
            term: 7,
            ..Message::default()
        };
        m.context = Bytes::copy_from_slice(data);
        m
    }

    proptest! {
        /// Whatever the split of the stream into reads, the frames come out whole, in order.
        #[test]
        fn frames_come_out_whole_and_in_order_whatever_the_reads(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..20),
            cuts in proptest::collection::vec(1usize..64, 1..50),
        ) {
            let mut stream = BytesMut::new();
            for p in &payloads {
                encode(&message(p), &mut stream);
            }
            let stream = stream.freeze();
            let mut buffer = BytesMut::new();
            let mut out = Vec::new();
            let mut at = 0;
            let mut cut = cuts.iter().cycle();
            while at < stream.len() {
                let n = (*cut.next().expect("cycle")).min(stream.len() - at);
                buffer.extend_from_slice(&stream[at..at + n]);
                at += n;
                while let Some(body) = split_frame(&mut buffer, FRAME_BYTES_MAX).expect("in limit") {
                    out.push(decode_message(body).expect("decodes"));
                }
            }
            let want: Vec<Message> = payloads.iter().map(|p| message(p)).collect();
            prop_assert_eq!(out, want);
            prop_assert!(buffer.is_empty());
        }

        /// Arbitrary bytes never panic the decoder: each read yields frames, asks for more,
        /// or is refused.
        #[test]
        fn garbage_is_refused_or_waits_and_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut buffer = BytesMut::from(&bytes[..]);
            while let Ok(Some(body)) = split_frame(&mut buffer, 1024) {
                let _ = decode_message(body.clone());
                let _ = decode_handshake::<Hello>(body);
            }
        }
    }

    #[test]
    fn a_length_over_the_limit_is_refused_before_its_body_arrives() {
        let mut buffer = BytesMut::new();
        buffer.put_u32_le(1025);
        assert_eq!(
            split_frame(&mut buffer, 1024),
            Err(FrameError::TooLarge {
                bytes: 1025,
                max: 1024
            })
        );
    }

    #[test]
    fn a_decoded_message_shares_the_read_buffer() {
        let mut buffer = BytesMut::new();
        encode(&message(&[9u8; 100]), &mut buffer);
        let body = split_frame(&mut buffer, FRAME_BYTES_MAX)
            .expect("in limit")
            .expect("whole");
        let range = body.as_ptr() as usize..body.as_ptr() as usize + body.len();
        let m = decode_message(body).expect("decodes");
        assert!(
            range.contains(&(m.context.as_ptr() as usize)),
            "the context is a slice of the frame, not a copy"
        );
    }
}

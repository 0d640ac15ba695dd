//! Where an HTTP/1.1 message body ends (RFC 9112 §6), found while its bytes
//! pass through unchanged.
//!
//! The proxy never re-encodes a body: a chunked body goes to the other side
//! chunked, byte for byte. It only has to know where the body stops, so
//! that the next message on the connection (a pipelined request, the next
//! response on a pooled backend connection) starts in the right place.

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all (most requests; `HEAD`, 1xx, 204 and 304 responses).
    Empty,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// A response without either: the body runs until the backend closes.
    UntilClose,
}

/// A body that cannot be framed; the connection it came on cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("invalid chunk size line")]
    ChunkSize,
    #[error("a chunk is not followed by CRLF")]
    ChunkEnd,
    #[error("chunk size line or trailer line too long")]
    LineTooLong,
    #[error("trailer section too large")]
    TrailersTooLarge,
}

/// The longest chunk-size line (with extensions) or trailer line accepted.
const MAX_LINE: usize = 4096;
/// The most trailer bytes accepted after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;

/// Follows one body through the bytes that carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyScan {
    state: State,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Length {
        left: u64,
    },
    /// Expecting a chunk-size line.
    Size,
    Data {
        left: u64,
    },
    /// Expecting the CRLF that closes a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers {
        seen: usize,
    },
    UntilClose,
    Done,
}

impl BodyScan {
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length { left: n },
            Framing::Chunked => State::Size,
            Framing::UntilClose => State::UntilClose,
        };
        BodyScan { state }
    }

    /// Whether the whole body has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes the body's bytes at the front of `buf`: returns how many
    /// belong to the body (forward them as they are). Fewer than `buf.len()`
    /// means the body ended (see [`is_done`](Self::is_done)) or that an
    /// incomplete line waits for more bytes; keep those and call again with
    /// them and what comes next.
    pub fn scan(&mut self, buf: &[u8]) -> Result<usize, FramingError> {
        let mut at = 0;
        loop {
            let rest = &buf[at..];
            match &mut self.state {
                State::Done => return Ok(at),
                State::UntilClose => return Ok(buf.len()),
                State::Length { left } => {
                    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(rest.len());
                    *left -= take as u64;
                    at += take;
                    if *left == 0 {
                        self.state = State::Done;
                    }
                    return Ok(at);
                }
                State::Data { left } => {
                    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(rest.len());
                    *left -= take as u64;
                    at += take;
                    if *left > 0 {
                        return Ok(at);
                    }
                    self.state = State::DataEnd;
                }
                State::DataEnd => {
                    if rest.len() < 2 {
                        if rest.first().is_some_and(|b| *b != b'\r') {
                            return Err(FramingError::ChunkEnd);
                        }
                        return Ok(at);
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(FramingError::ChunkEnd);
                    }
                    at += 2;
                    self.state = State::Size;
                }
                State::Size => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((used, 0))) => {
                        at += used;
                        self.state = State::Trailers { seen: 0 };
                    }
                    Ok(httparse::Status::Complete((used, size))) => {
                        at += used;
                        self.state = State::Data { left: size };
                    }
                    Ok(httparse::Status::Partial) => {
                        return if rest.len() > MAX_LINE {
                            Err(FramingError::LineTooLong)
                        } else {
                            Ok(at)
                        };
                    }
                    Err(_) => return Err(FramingError::ChunkSize),
                },
                State::Trailers { seen } => {
                    let Some(end) = rest.iter().position(|b| *b == b'\n') else {
                        return if rest.len() > MAX_LINE {
                            Err(FramingError::LineTooLong)
                        } else {
                            Ok(at)
                        };
                    };
                    let line = &rest[..end];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    at += end + 1;
                    *seen += end + 1;
                    if line.is_empty() {
                        self.state = State::Done;
                    } else if *seen > MAX_TRAILERS {
                        return Err(FramingError::TrailersTooLarge);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes, as reads would deliver it,
    /// keeping unconsumed bytes as a caller does; returns the body length
    /// found (or the error).
    fn body_len(framing: Framing, input: &[u8], step: usize) -> Result<usize, FramingError> {
        let mut scan = BodyScan::new(framing);
        let mut pending: Vec<u8> = Vec::new();
        let mut body = 0;
        for piece in input.chunks(step.max(1)) {
            pending.extend_from_slice(piece);
            let used = scan.scan(&pending)?;
            body += used;
            pending.drain(..used);
            if scan.is_done() {
                return Ok(body);
            }
        }
        Ok(body)
    }

    const CHUNKED: &[u8] =
        b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nX-Sum: 1\r\n\r\nNEXT";

    #[test]
    fn chunked_bodies_end_at_their_last_chunk_whatever_the_reads() {
        let expected = CHUNKED.len() - "NEXT".len();
        for step in [1, 2, 3, 7, 64] {
            assert_eq!(
                body_len(Framing::Chunked, CHUNKED, step),
                Ok(expected),
                "{step}"
            );
        }
        assert_eq!(body_len(Framing::Chunked, b"0\r\n\r\nGET", 1), Ok(5));
    }

    #[test]
    fn an_unfinished_chunked_body_is_not_done() {
        let mut scan = BodyScan::new(Framing::Chunked);
        assert_eq!(scan.scan(b"5\r\nhel"), Ok(6));
        assert!(!scan.is_done());
        assert_eq!(scan.scan(b"lo\r\n0\r"), Ok(4), "a partial size line waits");
        assert_eq!(scan.scan(b"0\r\n\r\n"), Ok(5));
        assert!(scan.is_done());
    }

    #[test]
    fn lengths_count_down_and_stop_at_the_next_message() {
        assert_eq!(body_len(Framing::Length(3), b"abcdef", 1), Ok(3));
        let mut scan = BodyScan::new(Framing::Length(3));
        assert_eq!(scan.scan(b"abcdef"), Ok(3));
        assert!(scan.is_done());
        assert!(BodyScan::new(Framing::Empty).is_done());
        assert!(BodyScan::new(Framing::Length(0)).is_done());
        let mut until_close = BodyScan::new(Framing::UntilClose);
        assert_eq!(until_close.scan(b"anything"), Ok(8));
        assert!(!until_close.is_done());
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        assert_eq!(
            body_len(Framing::Chunked, b"zz\r\nhello\r\n", 64),
            Err(FramingError::ChunkSize)
        );
        assert_eq!(
            body_len(Framing::Chunked, b"5\r\nhelloXX0\r\n\r\n", 64),
            Err(FramingError::ChunkEnd)
        );
        assert_eq!(
            body_len(Framing::Chunked, b"5\r\nhelloX", 1),
            Err(FramingError::ChunkEnd)
        );
        let long = [b"1;".as_slice(), &[b'x'; 5000]].concat();
        assert_eq!(
            body_len(Framing::Chunked, &long, 64),
            Err(FramingError::LineTooLong)
        );
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..2000 {
            trailers.extend_from_slice(b"X-A: 1234567890\r\n");
        }
        assert_eq!(
            body_len(Framing::Chunked, &trailers, 512),
            Err(FramingError::TrailersTooLarge)
        );
    }
}

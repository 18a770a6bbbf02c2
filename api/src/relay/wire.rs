//! The WebSocket framing (RFC 6455) on the sockets the relay owns: server frames encoded once
//! (an event's frame is the same bytes for every subscriber), client frames parsed from what
//! the socket gave, masked and possibly fragmented.

use bytes::Bytes;

const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// One unmasked, final server frame.
pub fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out.into()
}

/// A close frame with `code` and `reason` (cut to the 123 bytes a control frame allows).
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    frame(CLOSE, &payload)
}

/// A whole message from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    Binary,
    Ping(Vec<u8>),
    Pong,
    /// Its status code, if it had one (two bytes).
    Close(Vec<u8>),
}

#[derive(Debug, PartialEq, Eq)]
pub enum WireError {
    /// A frame or message over the size limit.
    TooBig,
    /// Not a frame a client may send.
    Protocol(&'static str),
}

/// Client bytes not yet parsed, and a fragmented message being assembled. Empty (and holding
/// no allocation) between messages, so an idle connection keeps nothing here.
#[derive(Default)]
pub struct Reader {
    buf: Vec<u8>,
    partial: Option<(u8, Vec<u8>)>,
}

impl Reader {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, `None` until one is complete; `max` bounds a frame and a message.
    pub fn next(&mut self, max: usize) -> Result<Option<Incoming>, WireError> {
        loop {
            let Some((fin, opcode, payload, used)) = parse(&self.buf, max)? else {
                return Ok(None);
            };
            self.buf.drain(..used);
            if self.buf.is_empty() {
                self.buf = Vec::new();
            }
            let message = match opcode {
                PING => Incoming::Ping(payload),
                PONG => Incoming::Pong,
                CLOSE => Incoming::Close(payload.get(..2).map(<[u8]>::to_vec).unwrap_or_default()),
                TEXT | BINARY if self.partial.is_some() => {
                    return Err(WireError::Protocol("a new message inside a fragmented one"));
                }
                TEXT | BINARY if !fin => {
                    self.partial = Some((opcode, payload));
                    continue;
                }
                TEXT | BINARY => whole(opcode, payload)?,
                CONTINUATION => {
                    let Some((first, mut data)) = self.partial.take() else {
                        return Err(WireError::Protocol("a continuation without a message"));
                    };
                    if data.len() + payload.len() > max {
                        return Err(WireError::TooBig);
                    }
                    data.extend_from_slice(&payload);
                    if !fin {
                        self.partial = Some((first, data));
                        continue;
                    }
                    whole(first, data)?
                }
                _ => return Err(WireError::Protocol("unknown opcode")),
            };
            return Ok(Some(message));
        }
    }
}

fn whole(opcode: u8, payload: Vec<u8>) -> Result<Incoming, WireError> {
    if opcode == BINARY {
        return Ok(Incoming::Binary);
    }
    String::from_utf8(payload)
        .map(Incoming::Text)
        .map_err(|_| WireError::Protocol("a text message that is not UTF-8"))
}

/// One frame at the start of `buf`: (fin, opcode, unmasked payload, bytes used).
#[allow(clippy::type_complexity)]
fn parse(buf: &[u8], max: usize) -> Result<Option<(bool, u8, Vec<u8>, usize)>, WireError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (fin, opcode) = (buf[0] & 0x80 != 0, buf[0] & 0x0f);
    if buf[0] & 0x70 != 0 {
        return Err(WireError::Protocol("reserved bits set"));
    }
    if buf[1] & 0x80 == 0 {
        return Err(WireError::Protocol("an unmasked client frame"));
    }
    let (len, at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(n), 10)
        }
        126 | 127 => return Ok(None),
        n => (u64::from(n), 2),
    };
    if opcode & 0x8 != 0 && (len > 125 || !fin) {
        return Err(WireError::Protocol("a control frame over 125 bytes or fragmented"));
    }
    let len = usize::try_from(len).map_err(|_| WireError::TooBig)?;
    if len > max {
        return Err(WireError::TooBig);
    }
    let start = at + 4;
    if buf.len() < start + len {
        return Ok(None);
    }
    let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    let payload =
        buf[start..start + len].iter().enumerate().map(|(i, b)| b ^ mask[i & 3]).collect();
    Ok(Some((fin, opcode, payload, start + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn client(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    #[test]
    fn server_frames_carry_their_length() {
        assert_eq!(&frame(TEXT, b"hi")[..], b"\x81\x02hi");
        let long = frame(TEXT, &[b'x'; 300]);
        assert_eq!(&long[..4], &[0x81, 126, 1, 44]);
        assert_eq!(long.len(), 304);
        assert_eq!(&close(4008, "slow")[..], b"\x88\x06\x0f\xa8slow");
        assert_eq!(close(1001, &"é".repeat(100)).len(), 2 + 2 + 122);
    }

    #[test]
    fn client_messages_arrive_whole_however_the_bytes_are_cut() {
        let mut bytes = client(0x81, br#"{"op":"ping"}"#);
        bytes.extend(client(0x01, b"frag"));
        bytes.extend(client(0x89, b"p"));
        bytes.extend(client(0x80, b"mented"));
        bytes.extend(client(0x82, &[1, 2]));
        bytes.extend(client(0x88, &[3, 232]));
        let mut reader = Reader::default();
        let mut got = Vec::new();
        for byte in bytes {
            reader.push(&[byte]);
            while let Some(message) = reader.next(1024).expect("valid") {
                got.push(message);
            }
        }
        assert_eq!(
            got,
            [
                Incoming::Text(r#"{"op":"ping"}"#.into()),
                Incoming::Ping(b"p".to_vec()),
                Incoming::Text("fragmented".into()),
                Incoming::Binary,
                Incoming::Close(vec![3, 232]),
            ]
        );
        assert_eq!(reader.buf.capacity(), 0);
    }

    #[test]
    fn broken_or_oversized_frames_are_refused() {
        let check = |bytes: Vec<u8>, expect: WireError| {
            let mut reader = Reader::default();
            reader.push(&bytes);
            assert_eq!(reader.next(100), Err(expect));
        };
        check(client(0x81, &[b'x'; 101]), WireError::TooBig);
        let mut two = client(0x01, &[b'x'; 60]);
        two.extend(client(0x80, &[b'x'; 60]));
        check(two, WireError::TooBig);
        check(b"\x81\x02hi".to_vec(), WireError::Protocol("an unmasked client frame"));
        check(client(0x80, b"x"), WireError::Protocol("a continuation without a message"));
        check(
            client(0x09, b"x"),
            WireError::Protocol("a control frame over 125 bytes or fragmented"),
        );
        check(client(0x83, b"x"), WireError::Protocol("unknown opcode"));
        check(client(0x81, &[0xff]), WireError::Protocol("a text message that is not UTF-8"));
    }
}

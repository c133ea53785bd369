//! Where a chunked request body ends: a state machine over the bytes as they
//! come, so the body can be forwarded verbatim while it streams and the next
//! request head is found exactly where the upstream will look for it.

/// The most a chunk-size line or the trailer section may take: they must fit
/// in the connection's buffer.
const MAX_TRAILERS: usize = 64 * 1024;

/// A chunked body that does not follow RFC 9112 section 7.1 to the letter.
/// The proxy and the upstream must agree on where the body ends, so anything
/// a lenient parser might read differently (a bare LF, an empty size) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunked {
    state: State,
    /// How much of the line being read was searched for its end already:
    /// bytes may come one at a time, a line must be searched once.
    searched: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data: this many bytes left.
    Data(u64),
    /// Expecting the CRLF that ends a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty line; bytes so far.
    Trailers(usize),
    /// The body is complete.
    Done,
}

impl Chunked {
    pub fn new() -> Chunked {
        Chunked { state: State::Size, searched: 0 }
    }

    /// Reads the start of `buf` (body bytes not yet forwarded) and returns how
    /// many of them belong to the body and may be forwarded now. 0 means more
    /// bytes are needed (or the body is done): the next call is then given
    /// the same bytes and more.
    pub fn advance(&mut self, buf: &[u8]) -> Result<usize, Malformed> {
        match self.state {
            State::Size => {
                let Some(line) = self.line(buf, MAX_TRAILERS)? else { return Ok(0) };
                let Ok(httparse::Status::Complete((len, size))) = httparse::parse_chunk_size(&buf[..line]) else {
                    return Err(Malformed);
                };
                // httparse takes an empty size as 0, and any byte in an extension.
                if len != line || !buf[0].is_ascii_hexdigit() {
                    return Err(Malformed);
                }
                self.state = if size == 0 { State::Trailers(0) } else { State::Data(size) };
                Ok(line)
            }
            State::Data(left) => {
                let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                self.state = match left - n as u64 {
                    0 => State::DataEnd,
                    left => State::Data(left),
                };
                Ok(n)
            }
            State::DataEnd => match buf {
                [b'\r', b'\n', ..] => {
                    self.state = State::Size;
                    Ok(2)
                }
                [] | [b'\r'] => Ok(0),
                _ => Err(Malformed),
            },
            State::Trailers(seen) => {
                let Some(line) = self.line(buf, MAX_TRAILERS - seen)? else { return Ok(0) };
                self.state = if line == 2 { State::Done } else { State::Trailers(seen + line) };
                Ok(line)
            }
            State::Done => Ok(0),
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The length of the CRLF-ended line at the start of `buf`, CRLF
    /// included; None if it has not all come yet. A CR or LF anywhere else
    /// is malformed.
    fn line(&mut self, buf: &[u8], max: usize) -> Result<Option<usize>, Malformed> {
        let end = buf[self.searched..].iter().position(|&b| b == b'\r' || b == b'\n').map(|at| self.searched + at);
        match end {
            Some(at) if buf[at] == b'\n' => Err(Malformed),
            Some(at) if at + 1 == buf.len() => {
                self.searched = at; // the LF may come next
                Ok(None)
            }
            Some(at) if buf[at + 1] == b'\n' && at + 2 <= max => {
                self.searched = 0;
                Ok(Some(at + 2))
            }
            Some(_) => Err(Malformed),
            None if buf.len() >= max => Err(Malformed),
            None => {
                self.searched = buf.len();
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes, as a socket might deliver it;
    /// returns how many bytes belong to the body, or the error.
    fn body_len(input: &[u8], step: usize) -> Result<Option<usize>, Malformed> {
        let mut state = Chunked::new();
        let (mut taken, mut have) = (0, 0);
        while !state.is_done() {
            match state.advance(&input[taken..have])? {
                0 if have == input.len() => return Ok(None), // wants more than there is
                0 => have = (have + step).min(input.len()),
                n => taken += n,
            }
        }
        Ok(Some(taken))
    }

    #[test]
    fn bodies() {
        let ok: &[(&[u8], usize)] = &[
            (b"0\r\n\r\n", 5),
            (b"4\r\nRust\r\n0\r\n\r\nGET / HTTP/1.1\r\n", 14),
            (b"4;ext=\"a b\"\r\nRust\r\n000\r\nTrailer: x\r\n\r\nnext", 38),
            (b"A\r\n0123456789\r\n0\r\n\r\n", 20),
            (b"1 \r\nx\r\n0\r\n\r\n", 12), // whitespace after the size, as httparse allows
        ];
        for (input, len) in ok {
            for step in [1, 2, 3, 7, input.len()] {
                assert_eq!(body_len(input, step), Ok(Some(*len)), "{} by {step}", String::from_utf8_lossy(input));
            }
        }
        let incomplete: &[&[u8]] = &[b"", b"4\r\nRu", b"4\r\nRust\r", b"0\r\n", b"0\r\nTrailer: x\r\n"];
        for input in incomplete {
            assert_eq!(body_len(input, 1), Ok(None), "{}", String::from_utf8_lossy(input));
        }
        let huge = format!("{}\r\n", "f".repeat(16));
        assert_eq!(body_len(huge.as_bytes(), 1), Ok(None), "u64::MAX is a size, counted without overflow");
    }

    #[test]
    fn malformed_bodies() {
        let too_long_trailer = format!("0\r\nX: {}\r\n\r\n", "a".repeat(MAX_TRAILERS));
        let long_extension = format!("1;{}\r\nx\r\n0\r\n\r\n", "a".repeat(MAX_TRAILERS));
        let bad: &[&[u8]] = &[
            b"4\nRust\r\n0\r\n\r\n",        // bare LF after the size
            b"4\rRust\r\n0\r\n\r\n",        // bare CR
            b"4;a\nb\r\nRust\r\n0\r\n\r\n", // LF in an extension
            b"\r\n\r\n",                    // no size
            b";x\r\n\r\n",                  // no size, an extension
            b" 4\r\nRust\r\n0\r\n\r\n",     // space before the size
            b"-1\r\nx\r\n0\r\n\r\n",
            b"g\r\n",
            b"4\r\nRustX\r\n0\r\n\r\n", // data longer than its size
            b"4\r\nRustXY0\r\n\r\n",    // two bytes in the place of the CRLF
            b"4\r\nRust\n0\r\n\r\n",    // bare LF after the data
            b"0\r\nTrailer: x\n\r\n",   // bare LF in a trailer
            b"0\r\n\n",
            b"11111111111111111\r\n", // 17 hex digits: more than u64
            too_long_trailer.as_bytes(),
            long_extension.as_bytes(),
        ];
        for input in bad {
            for step in [1, input.len()] {
                assert_eq!(body_len(input, step), Err(Malformed), "{} by {step}", String::from_utf8_lossy(input));
            }
        }
    }
}

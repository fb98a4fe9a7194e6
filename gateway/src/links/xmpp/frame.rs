//! Framing of an XMPP stream (RFC 6120 §4): bytes as they come off the socket, cut into the
//! stream header, whole top-level elements (stanzas and stream-level elements) and the end
//! of the stream, without parsing them.
//!
//! A stream is one XML document that never ends while it is in use, so no ordinary parser
//! can be handed it whole; the framer only tracks where tags, comments and quoted values
//! begin and end, and counts open elements, so each stanza can then be parsed alone (by
//! `stanza`, through the one XML module) with every limit an SSP body has. What an XML bomb
//! needs is refused here already: a DOCTYPE (RFC 6120 §11.1 forbids one) ends the stream, a
//! stanza over the size limit is refused before it is buffered whole, and nesting is bounded.

/// What the framer cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The stream header's start tag, `<stream:stream …>` (the XML declaration dropped).
    Header(Vec<u8>),
    /// One whole top-level element.
    Stanza(Vec<u8>),
    /// `</stream:stream>`: the far side closed the stream.
    End,
}

/// Why a stream cannot be read on (each maps to a stream error, RFC 6120 §4.9.3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A stanza larger than the limit (`policy-violation`).
    #[error("a stanza of more than {0} bytes")]
    TooLarge(usize),
    /// Elements nested deeper than the limit (`policy-violation`).
    #[error("elements nested more than {0} deep")]
    TooDeep(usize),
    /// A DOCTYPE or other markup declaration (`restricted-xml`).
    #[error("a DOCTYPE or markup declaration")]
    Restricted,
    /// Not XML the framer can follow (`bad-format`).
    #[error("not well-formed: {0}")]
    Syntax(&'static str),
}

/// The stream framer. Bytes go in with [`Framer::push`]; frames come out of
/// [`Framer::next_frame`] as soon as they are whole.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    /// Where scanning goes on.
    pos: usize,
    /// Where the element being cut starts.
    start: Option<usize>,
    /// Elements open inside it.
    depth: usize,
    /// Whether the stream header was seen.
    header: bool,
    /// How much of the unfinished token at `pos` was scanned already, and the quote open
    /// at that point (a token arriving a byte at a time is not scanned again from its
    /// start each time).
    scanned: usize,
    quote: Option<u8>,
    max_stanza: usize,
    max_depth: usize,
}

impl Framer {
    /// A framer for a new stream.
    pub fn new(max_stanza: usize, max_depth: usize) -> Framer {
        Framer {
            buf: Vec::with_capacity(4096),
            pos: 0,
            start: None,
            depth: 0,
            header: false,
            scanned: 0,
            quote: None,
            max_stanza,
            max_depth,
        }
    }

    /// Start over, for a restarted stream (after STARTTLS or SASL): nothing said before
    /// counts (RFC 6120 §5.4.3.3, §6.4.6).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.pos = 0;
        self.start = None;
        self.depth = 0;
        self.header = false;
        self.scanned = 0;
        self.quote = None;
    }

    /// Bytes read from the socket.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes waiting (read but not yet framed): what must not be carried over a TLS
    /// upgrade.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos.min(self.buf.len())
    }

    /// The next whole frame, `None` until more bytes come.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            if self.start.is_none() {
                // Between elements: whitespace (keepalives) is dropped, text is not allowed.
                while self.pos < self.buf.len() && self.buf[self.pos].is_ascii_whitespace() {
                    self.pos += 1;
                }
                if self.pos >= self.buf.len() {
                    self.buf.clear();
                    self.pos = 0;
                    return Ok(None);
                }
                // What was cut is dropped once it is most of the buffer, not after every
                // stanza (many small stanzas in one read would move the rest each time).
                if self.pos > 4096 && self.pos * 2 > self.buf.len() {
                    self.buf.drain(..self.pos);
                    self.pos = 0;
                }
                if self.buf[self.pos] != b'<' {
                    return Err(FrameError::Syntax("text outside a stanza"));
                }
                self.start = Some(self.pos);
            }
            let start = self.start.unwrap_or(0);
            if self.pos >= self.buf.len() {
                return self.more(start);
            }
            let rest = &self.buf[self.pos..];
            if rest[0] != b'<' {
                // Text: up to the next markup.
                match memchr::memchr(b'<', rest) {
                    Some(i) => self.pos += i,
                    None => {
                        self.pos = self.buf.len();
                        return self.more(start);
                    }
                }
                continue;
            }
            let Some(&second) = rest.get(1) else {
                return self.more(start);
            };
            // Where the search for this token's end goes on (a needle may straddle the
            // bytes scanned already and the new ones).
            let from = |min: usize, needle: usize| min.max(self.scanned.saturating_sub(needle - 1));
            match second {
                b'?' if self.depth == 0 && self.header => {
                    // RFC 6120 §11.1: no processing instructions in a stream (the XML
                    // declaration before the header is the one allowed).
                    return Err(FrameError::Restricted);
                }
                b'!' if self.depth == 0 && self.header => {
                    // Nor comments between stanzas (they would cost a scan each, unbounded).
                    return Err(FrameError::Restricted);
                }
                b'?' => {
                    let at = from(2, 2);
                    let Some(end) = find(&rest[at..], b"?>").map(|e| e + at) else {
                        self.scanned = rest.len();
                        return self.more(start);
                    };
                    self.scanned = 0;
                    self.pos += end + 2;
                    if self.depth == 0 {
                        // The XML declaration (or a processing instruction) at stream level.
                        self.start = None;
                    }
                }
                b'!' => {
                    let skip = if rest.starts_with(b"<!--") {
                        let at = from(4, 3);
                        find(&rest[at..], b"-->").map(|e| e + at + 3)
                    } else if rest.starts_with(b"<![CDATA[") && self.depth > 0 {
                        let at = from(9, 3);
                        find(&rest[at..], b"]]>").map(|e| e + at + 3)
                    } else if b"<!--".starts_with(rest) || b"<![CDATA[".starts_with(rest) {
                        None
                    } else {
                        return Err(FrameError::Restricted);
                    };
                    let Some(n) = skip else {
                        self.scanned = rest.len();
                        return self.more(start);
                    };
                    self.scanned = 0;
                    self.pos += n;
                    if self.depth == 0 {
                        self.start = None;
                    }
                }
                b'/' => {
                    let end = match tag_end(rest, self.scanned.max(1), self.quote) {
                        Ok(end) => end,
                        Err(q) => {
                            (self.scanned, self.quote) = (rest.len(), q);
                            return self.more(start);
                        }
                    };
                    (self.scanned, self.quote) = (0, None);
                    self.pos += end + 1;
                    if self.depth == 0 {
                        // The only end tag at stream level is the stream's own.
                        self.start = None;
                        return Ok(Some(Frame::End));
                    }
                    self.depth -= 1;
                    if self.depth == 0 {
                        return Ok(Some(self.cut(start)));
                    }
                }
                _ => {
                    let end = match tag_end(rest, self.scanned.max(1), self.quote) {
                        Ok(end) => end,
                        Err(q) => {
                            (self.scanned, self.quote) = (rest.len(), q);
                            return self.more(start);
                        }
                    };
                    (self.scanned, self.quote) = (0, None);
                    let empty = end > 0 && rest[end - 1] == b'/';
                    self.pos += end + 1;
                    if !self.header {
                        if empty || self.depth != 0 {
                            return Err(FrameError::Syntax("no stream header"));
                        }
                        self.header = true;
                        let h = self.buf[start..self.pos].to_vec();
                        self.start = None;
                        return Ok(Some(Frame::Header(h)));
                    }
                    if empty {
                        if self.depth == 0 {
                            return Ok(Some(self.cut(start)));
                        }
                    } else {
                        self.depth += 1;
                        if self.depth > self.max_depth {
                            return Err(FrameError::TooDeep(self.max_depth));
                        }
                    }
                }
            }
            if self.pos - start > self.max_stanza {
                return Err(FrameError::TooLarge(self.max_stanza));
            }
        }
    }

    /// Wait for more bytes, unless what is buffered of this element is over the limit.
    fn more(&self, start: usize) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() - start > self.max_stanza {
            return Err(FrameError::TooLarge(self.max_stanza));
        }
        Ok(None)
    }

    fn cut(&mut self, start: usize) -> Frame {
        let s = self.buf[start..self.pos].to_vec();
        self.start = None;
        Frame::Stanza(s)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// Where the tag at the start of `s` ends (its `>`), skipping quoted attribute values; the
/// scan starts at `from` with `quote` open there. Not there yet: the quote open at the end.
fn tag_end(s: &[u8], from: usize, mut quote: Option<u8>) -> Result<usize, Option<u8>> {
    for (i, &b) in s.iter().enumerate().skip(from) {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == b'>' => return Ok(i),
            None => {}
        }
    }
    Err(quote)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn all(f: &mut Framer) -> Result<Vec<Frame>, FrameError> {
        let mut out = Vec::new();
        while let Some(x) = f.next_frame()? {
            out.push(x);
        }
        Ok(out)
    }

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
        xmlns:stream='http://etherx.jabber.org/streams' to='a.example' version='1.0'>";

    #[test]
    fn cuts_header_stanzas_and_end_whatever_the_reads() {
        let text = format!(
            "{HEADER}<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features> \n\
             <message to='x@a' from=\"y@b\"><body>a &lt; b > c <!-- c --><![CDATA[<x>]]></body></message>\
             <presence a='>'/></stream:stream>"
        );
        // One byte at a time and all at once give the same frames.
        for chunk in [1, 7, text.len()] {
            let mut f = Framer::new(10_000, 16);
            let mut got = Vec::new();
            for c in text.as_bytes().chunks(chunk) {
                f.push(c);
                got.extend(all(&mut f).unwrap());
            }
            assert_eq!(got.len(), 5, "{got:?}");
            assert!(matches!(&got[0], Frame::Header(h) if h.starts_with(b"<stream:stream")));
            assert!(matches!(&got[1], Frame::Stanza(s) if s.ends_with(b"</stream:features>")));
            assert!(
                matches!(&got[2], Frame::Stanza(s) if s.starts_with(b"<message")
                && s.ends_with(b"</message>"))
            );
            assert_eq!(got[3], Frame::Stanza(b"<presence a='>'/>".to_vec()));
            assert_eq!(got[4], Frame::End);
        }
    }

    #[test]
    fn refuses_doctype_deep_nesting_and_big_stanzas() {
        let mut f = Framer::new(100, 3);
        f.push(b"<!DOCTYPE x [<!ENTITY a 'aaaa'>]><stream:stream>");
        assert_eq!(f.next_frame(), Err(FrameError::Restricted));

        let mut f = Framer::new(100, 3);
        f.push(format!("{HEADER}<a><b><c><d>").as_bytes());
        assert_eq!(all(&mut f), Err(FrameError::TooDeep(3)));

        // Refused before the stanza is whole: a peer cannot make us buffer it.
        let mut f = Framer::new(100, 3);
        f.push(HEADER.as_bytes());
        f.push(b"<message><body>");
        f.push(&[b'x'; 200]);
        assert_eq!(all(&mut f), Err(FrameError::TooLarge(100)));

        let mut f = Framer::new(100, 3);
        f.push(format!("{HEADER}hello").as_bytes());
        assert!(matches!(all(&mut f), Err(FrameError::Syntax(_))));

        // Comments and processing instructions between stanzas (RFC 6120 §11.1).
        for between in ["<!-- hi -->", "<?pi x?>"] {
            let mut f = Framer::new(100, 3);
            f.push(format!("{HEADER}<a/>{between}<b/>").as_bytes());
            assert_eq!(f.next_frame().unwrap().map(|_| ()), Some(()));
            assert_eq!(f.next_frame().unwrap().map(|_| ()), Some(()));
            assert_eq!(f.next_frame(), Err(FrameError::Restricted), "{between}");
        }
        // Many small stanzas in one read: each one cut.
        let mut f = Framer::new(100, 3);
        f.push(format!("{HEADER}{}", "<a/>".repeat(5000)).as_bytes());
        assert_eq!(all(&mut f).unwrap().len(), 5001);

        // A DOCTYPE inside a stanza too.
        let mut f = Framer::new(100, 3);
        f.push(format!("{HEADER}<a><!ENTITY x 'y'></a>").as_bytes());
        assert_eq!(all(&mut f), Err(FrameError::Restricted));
    }

    #[test]
    fn a_token_fed_a_byte_at_a_time_is_scanned_once() {
        // Quotes, comments and CDATA split across reads at every byte: the same frames.
        let text = format!("{HEADER}<a x='>\"' y=\"'>\"><!-- -- > --><![CDATA[ ]] ]> ]]><b/></a>");
        let mut f = Framer::new(100_000, 8);
        let mut got = Vec::new();
        for b in text.as_bytes() {
            f.push(&[*b]);
            got.extend(all(&mut f).unwrap());
        }
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(matches!(&got[1], Frame::Stanza(s) if s.ends_with(b"</a>")));
        // A long attribute a byte at a time: linear, not quadratic (this would take
        // minutes rescanning from the start each time).
        let mut f = Framer::new(4_000_000, 8);
        f.push(HEADER.as_bytes());
        assert!(matches!(f.next_frame().unwrap(), Some(Frame::Header(_))));
        f.push(b"<message a='");
        for _ in 0..2_000_000 {
            f.push(b"x");
            assert_eq!(f.next_frame().unwrap(), None);
        }
        f.push(b"'/>");
        assert!(matches!(f.next_frame().unwrap(), Some(Frame::Stanza(_))));
    }

    #[test]
    fn a_restart_forgets_what_came_before() {
        let mut f = Framer::new(1000, 8);
        f.push(HEADER.as_bytes());
        f.push(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        assert_eq!(all(&mut f).unwrap().len(), 2);
        assert_eq!(f.pending(), 0);
        f.reset();
        f.push(HEADER.as_bytes());
        assert!(matches!(f.next_frame().unwrap(), Some(Frame::Header(_))));
    }
}

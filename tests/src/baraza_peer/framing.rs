//! HTTP/1.1 framing as Kannel writes and reads it.

use super::*;

/// One HTTP message.
#[derive(Debug, Clone)]
pub(super) struct HttpMsg {
    /// Request line or status line.
    pub(super) start: String,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
    /// The bytes as they were on the wire.
    pub(super) raw: Vec<u8>,
    /// Response delimited by the end of the connection.
    pub(super) until_eof: bool,
}

impl HttpMsg {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn wants_close(&self) -> bool {
        self.headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("connection")
                && v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))
        })
    }

    pub(super) fn status_code(&self) -> Option<u16> {
        self.start.split_whitespace().nth(1)?.parse().ok()
    }
}

pub(super) fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

pub(super) async fn fill<S: AsyncRead + Unpin + ?Sized>(
    io: &mut S,
    buf: &mut Vec<u8>,
) -> anyhow::Result<usize> {
    let mut tmp = [0u8; 8192];
    let n = match io.read(&mut tmp).await {
        Ok(n) => n,
        // A TLS peer that closes without close_notify: an end of stream like any other.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
        Err(e) => return Err(e.into()),
    };
    buf.extend_from_slice(&tmp[..n]);
    Ok(n)
}

/// Read one message from `io` (leftover bytes live in `buf`). `Ok(None)`: clean end of the
/// connection before any byte of a new message.
pub(super) async fn read_message<S: AsyncRead + Unpin + ?Sized>(
    io: &mut S,
    buf: &mut Vec<u8>,
    response: bool,
) -> anyhow::Result<Option<HttpMsg>> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n", 0) {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            bail!("HTTP head larger than {MAX_HEAD} bytes");
        }
        if fill(io, buf).await? == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            bail!("connection closed inside the HTTP head");
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end - 4]).into_owned();
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    for line in lines {
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| anyhow!("malformed header line {line:?}"))?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let mut msg = HttpMsg {
        start,
        headers,
        body: Vec::new(),
        raw: Vec::new(),
        until_eof: false,
    };
    let chunked = msg
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = match msg.header("content-length") {
        Some(v) => Some(
            v.parse::<usize>()
                .map_err(|_| anyhow!("bad Content-Length {v:?}"))?,
        ),
        None => None,
    };
    let no_body_status = response
        && msg
            .status_code()
            .is_some_and(|c| c < 200 || c == 204 || c == 304);
    let end = if no_body_status {
        head_end
    } else if chunked {
        let mut p = head_end;
        loop {
            let line_end = loop {
                if let Some(i) = find(buf, b"\r\n", p) {
                    break i;
                }
                if buf.len() - p > MAX_HEAD {
                    bail!("chunk header too long");
                }
                if fill(io, buf).await? == 0 {
                    bail!("connection closed inside a chunk header");
                }
            };
            let size_text = String::from_utf8_lossy(&buf[p..line_end]).into_owned();
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| anyhow!("bad chunk size {size_text:?}"))?;
            p = line_end + 2;
            if size == 0 {
                // Trailers up to the empty line.
                loop {
                    let e = loop {
                        if let Some(i) = find(buf, b"\r\n", p) {
                            break i;
                        }
                        if buf.len() - p > MAX_HEAD {
                            bail!("trailers too long");
                        }
                        if fill(io, buf).await? == 0 {
                            bail!("connection closed inside the trailers");
                        }
                    };
                    let empty = e == p;
                    p = e + 2;
                    if empty {
                        break;
                    }
                }
                break p;
            }
            if size > MAX_BODY.saturating_sub(msg.body.len()) {
                bail!("body larger than {MAX_BODY} bytes");
            }
            while buf.len() < p + size + 2 {
                if fill(io, buf).await? == 0 {
                    bail!("connection closed inside a chunk");
                }
            }
            msg.body.extend_from_slice(&buf[p..p + size]);
            p += size + 2;
        }
    } else if let Some(n) = length {
        if n > MAX_BODY {
            bail!("body of {n} bytes is larger than {MAX_BODY}");
        }
        while buf.len() < head_end + n {
            if fill(io, buf).await? == 0 {
                bail!("connection closed inside the body");
            }
        }
        msg.body = buf[head_end..head_end + n].to_vec();
        head_end + n
    } else if response {
        while fill(io, buf).await? > 0 {
            if buf.len() - head_end > MAX_BODY {
                bail!("body larger than {MAX_BODY} bytes");
            }
        }
        msg.until_eof = true;
        msg.body = buf[head_end..].to_vec();
        buf.len()
    } else {
        head_end
    };
    msg.raw = buf[..end].to_vec();
    buf.drain(..end);
    Ok(Some(msg))
}

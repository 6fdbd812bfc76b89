//! HTTP/1.1 request heads (httparse) and responses, sans I/O: bytes in, a [`Request`] or an [`HttpError`]
//! carrying its status code out.

/// Headers kept from a request (the rest are not needed and not stored).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    /// HTTP minor version: 0 or 1.
    pub version: u8,
    pub content_length: usize,
    pub authorization: Option<String>,
    pub cookie: Option<String>,
    pub upgrade: Option<String>,
    pub connection: Option<String>,
    pub ws_key: Option<String>,
    pub ws_version: Option<String>,
    /// `Sec-WebSocket-Extensions`, every such header's value joined with commas.
    pub ws_extensions: Option<String>,
    pub content_type: Option<String>,
    pub origin: Option<String>,
    pub host: Option<String>,
    /// `X-API-Key`, exchanged at `GET /api/ws/token`.
    pub api_key: Option<String>,
}

impl Request {
    /// The first value of query parameter `key`.
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Whether the client asked to keep the connection open after the response.
    pub fn keep_alive(&self) -> bool {
        let conn = self.connection.as_deref().unwrap_or("");
        let has = |t: &str| conn.split(',').any(|p| p.trim().eq_ignore_ascii_case(t));
        if self.version == 0 {
            has("keep-alive")
        } else {
            !has("close")
        }
    }

    /// Whether this is a WebSocket upgrade request.
    pub fn is_upgrade(&self) -> bool {
        self.upgrade.as_deref().is_some_and(|u| u.trim().eq_ignore_ascii_case("websocket"))
    }
}

/// A request that cannot be served, with the status it gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {message}")]
pub struct HttpError {
    pub status: u16,
    pub message: String,
}

impl HttpError {
    pub fn new(status: u16, message: impl Into<String>) -> HttpError {
        HttpError { status, message: message.into() }
    }
}

const MAX_HEADERS: usize = 64;

/// Parses a request head at the start of `buf`. `Ok(None)`: incomplete (and within `max_head`), read more.
/// On success, returns the request and the length of its head; the body (`content_length` bytes) follows.
pub fn parse_request(buf: &[u8], max_head: usize, max_body: usize) -> Result<Option<(Request, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > max_head {
                return Err(HttpError::new(431, "request header fields too large"));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::new(431, "too many header fields")),
        Err(e) => return Err(HttpError::new(400, format!("malformed request: {e}"))),
    };
    if head_len > max_head {
        return Err(HttpError::new(431, "request header fields too large"));
    }
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    let mut out = Request {
        method: req.method.unwrap_or("").to_owned(),
        path: path.to_owned(),
        query: parse_query(query),
        version: req.version.unwrap_or(1),
        ..Request::default()
    };
    for h in req.headers.iter() {
        let value = || String::from_utf8_lossy(h.value).into_owned();
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).ok().and_then(|s| s.trim().parse::<usize>().ok());
            out.content_length = v.ok_or_else(|| HttpError::new(400, "invalid Content-Length"))?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::new(411, "chunked bodies are not supported: send Content-Length"));
        } else if name.eq_ignore_ascii_case("authorization") {
            out.authorization = Some(value());
        } else if name.eq_ignore_ascii_case("cookie") {
            out.cookie = Some(value());
        } else if name.eq_ignore_ascii_case("upgrade") {
            out.upgrade = Some(value());
        } else if name.eq_ignore_ascii_case("connection") {
            out.connection = Some(value());
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            out.ws_key = Some(value());
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
            let v = value();
            out.ws_extensions = Some(match out.ws_extensions.take() {
                Some(before) => format!("{before}, {v}"),
                None => v,
            });
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            out.ws_version = Some(value());
        } else if name.eq_ignore_ascii_case("content-type") {
            out.content_type = Some(value());
        } else if name.eq_ignore_ascii_case("origin") {
            out.origin = Some(value());
        } else if name.eq_ignore_ascii_case("host") {
            out.host = Some(value());
        } else if name.eq_ignore_ascii_case("x-api-key") {
            out.api_key = Some(value());
        }
    }
    if out.content_length > max_body {
        return Err(HttpError::new(413, format!("body larger than {max_body} bytes")));
    }
    Ok(Some((out, head_len)))
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .take(32)
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(kv), String::new()),
        })
        .collect()
}

/// Decodes `%XX` escapes and `+`; invalid escapes are kept as they are.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The reason phrase of the statuses tickwire sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

/// A whole response with a body.
pub fn response(status: u16, content_type: &str, body: &[u8], keep_alive: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + body.len());
    out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason(status)).as_bytes());
    out.extend_from_slice(format!("Content-Type: {content_type}\r\nContent-Length: {}\r\n", body.len()).as_bytes());
    out.extend_from_slice(if keep_alive { b"Connection: keep-alive\r\n" } else { b"Connection: close\r\n" });
    out.extend_from_slice(b"Cache-Control: no-store\r\n\r\n");
    out.extend_from_slice(body);
    out
}

/// `resp` with `headers` (each ending in CRLF) added after its status line.
pub fn with_headers(mut resp: Vec<u8>, headers: &[u8]) -> Vec<u8> {
    if let Some(at) = resp.windows(2).position(|w| w == b"\r\n") {
        resp.splice(at + 2..at + 2, headers.iter().copied());
    }
    resp
}

/// A JSON response.
pub fn json(status: u16, body: &[u8], keep_alive: bool) -> Vec<u8> {
    response(status, "application/json", body, keep_alive)
}

/// `{"error": message}` with `status`.
pub fn error(status: u16, message: &str, keep_alive: bool) -> Vec<u8> {
    let mut body = b"{\"error\":".to_vec();
    tickwire_core::json::write_str(&mut body, message);
    body.push(b'}');
    json(status, &body, keep_alive)
}

/// A WebSocket accept key: the base64 of a SHA-1, 28 bytes, held without a heap allocation.
pub type AcceptKey = [u8; 28];

/// The 101 answer to a WebSocket upgrade, in three parts: before the accept key, the key, after it (with
/// the agreed extensions' header, if any: [`extensions_tail`]).
pub fn switching_protocols_parts<'a>(accept: &'a AcceptKey, tail: &'a [u8]) -> [&'a [u8]; 3] {
    [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
        accept,
        tail,
    ]
}

/// The end of a 101 answer: the `Sec-WebSocket-Extensions` header of what was agreed, if anything, and the
/// blank line.
pub fn extensions_tail(agreed: Option<&tickwire_core::deflate::Agreed>) -> Vec<u8> {
    match agreed {
        Some(a) => format!("\r\nSec-WebSocket-Extensions: {}\r\n\r\n", a.response()).into_bytes(),
        None => b"\r\n\r\n".to_vec(),
    }
}

/// The 101 answer to a WebSocket upgrade.
pub fn switching_protocols(accept: &AcceptKey, tail: &[u8]) -> Vec<u8> {
    switching_protocols_parts(accept, tail).concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_an_upgrade() {
        let raw = b"GET /v1/stream?client_id=a%20b&token=t HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nrest";
        let (req, n) = parse_request(raw, 8192, 1024).unwrap().unwrap();
        assert_eq!(&raw[n..], b"rest");
        assert_eq!(req.path, "/v1/stream");
        assert_eq!(req.query("client_id"), Some("a b"));
        assert_eq!(req.query("token"), Some("t"));
        assert!(req.is_upgrade() && req.keep_alive());
        assert_eq!(req.ws_version.as_deref(), Some("13"));
    }

    #[test]
    fn incomplete_oversized_and_malformed() {
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\nHost:", 8192, 0), Ok(None));
        assert_eq!(parse_request(b"GET\x01/ HTTP/1.1\r\n\r\n", 50, 0).unwrap_err().status, 400);
        assert_eq!(parse_request(&[b'a'; 100], 50, 0).unwrap_err().status, 431);
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(vec![b'a'; 200]);
        assert_eq!(parse_request(&big, 100, 0).unwrap_err().status, 431);
        assert_eq!(parse_request(b"POST / HTTP/1.1\r\nContent-Length: 99\r\n\r\n", 8192, 10).unwrap_err().status, 413);
        assert_eq!(parse_request(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 8192, 10).unwrap_err().status, 400);
        assert_eq!(
            parse_request(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 8192, 10).unwrap_err().status,
            411
        );
        assert!(!parse_request(b"GET / HTTP/1.0\r\n\r\n", 8192, 0).unwrap().unwrap().0.keep_alive());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb+c%"), "a/b c%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_request(&data, 512, 512);
        }

        #[test]
        fn decode_never_panics(s in ".{0,30}") {
            let _ = percent_decode(&s);
        }
    }
}

//! A minimal HTTP/1.1 client over a plain TCP socket, so that tests can also
//! misbehave: stop mid-upload, hang up mid-stream.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

/// An answer: status and body (JSON when it parses, else a string).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

/// Sends one request with `Connection: close` and reads the whole answer.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    key: &str,
    body: Option<(&str, &[u8])>,
) -> Answer {
    try_request(addr, method, path, key, &[], body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// [`request`] with extra headers, for a server that may be down: an error
/// when it cannot be reached or hangs up before answering.
pub fn try_request(
    addr: &str,
    method: &str,
    path: &str,
    key: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> Result<Answer, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {key}\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some((content_type, bytes)) = body {
        head.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            bytes.len()
        ));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    if let Some((_, bytes)) = body {
        stream.write_all(bytes).map_err(|e| format!("send: {e}"))?;
    }
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("no answer: {e}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {head:?}"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(Answer {
        status,
        body: serde_json::from_str(&body).unwrap_or(Value::String(body)),
    })
}

pub fn get(addr: &str, path: &str, key: &str) -> Answer {
    request(addr, "GET", path, key, None)
}

pub fn post_json(addr: &str, path: &str, key: &str, body: &Value) -> Answer {
    let bytes = serde_json::to_vec(body).unwrap();
    request(addr, "POST", path, key, Some(("application/json", &bytes)))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The value of a metric line `name value` in Prometheus text, if present.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

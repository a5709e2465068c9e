//! A small HTTP/1.1 server on 127.0.0.1 for download tests: it serves fixed bodies with
//! extra headers per path, honours `Range: bytes=A-` and `bytes=A-B`, can hang up
//! half-way through one answer, records every request, and stops when dropped (or
//! after 60 s). Include it with
//! `#[path = "support/http.rs"] mod http;` (std only, so any crate's tests can).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

/// What the server answers for one path.
#[derive(Debug, Clone)]
pub struct Route {
    pub body: Arc<Vec<u8>>,
    /// Sent with every answer for this path (e.g. `ETag`).
    pub headers: Vec<(String, String)>,
    /// The first answer of more than this many bytes announces its full length,
    /// sends this many and closes the connection.
    pub hang_up_after: Option<usize>,
    hung_up: Arc<AtomicBool>,
}

impl Route {
    /// `body` with no extra headers.
    pub fn plain(body: Vec<u8>) -> Self {
        Self {
            body: Arc::new(body),
            headers: Vec::new(),
            hang_up_after: None,
            hung_up: Arc::default(),
        }
    }

    /// This route, hanging up once after `n` bytes of a longer answer.
    pub fn hanging_up_once_after(self, n: usize) -> Self {
        Self {
            hang_up_after: Some(n),
            ..self
        }
    }

    /// True when this answer is the one to cut after `n` bytes.
    fn cut_now(&self, part_len: usize) -> Option<usize> {
        let n = self.hang_up_after.filter(|&n| part_len > n)?;
        (!self.hung_up.swap(true, Ordering::SeqCst)).then_some(n)
    }

    /// `body` as the Hugging Face hub serves a file: `ETag` (a hash of the body) and
    /// `X-Repo-Commit: commit`.
    pub fn hub(body: Vec<u8>, commit: &str) -> Self {
        let etag = format!("\"{}\"", etag_of(&body));
        Self {
            headers: vec![
                ("ETag".to_owned(), etag),
                ("X-Repo-Commit".to_owned(), commit.to_owned()),
            ],
            ..Self::plain(body)
        }
    }
}

/// The ETag [`Route::hub`] sends for `body` (without quotes): FNV-1a 64 and the length.
pub fn etag_of(body: &[u8]) -> String {
    let hash = body.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{hash:016x}{:08x}", body.len())
}

/// One request the server saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Without the leading `/`.
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
}

/// A running server; dropping it stops it.
pub struct Server {
    base: String,
    seen: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Server {
    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Tells HTTP clients (ureq reads `NO_PROXY`) to reach 127.0.0.1 directly even when a
/// proxy is configured. Once per process, before any client is built.
pub fn bypass_proxy_for_loopback() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for name in ["NO_PROXY", "no_proxy"] {
            std::env::set_var(name, "127.0.0.1,localhost");
        }
    });
}

/// Serves `routes` (path without the leading `/` -> answer) until the server is dropped.
pub fn serve(routes: HashMap<String, Route>) -> std::io::Result<Server> {
    bypass_proxy_for_loopback();
    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let base = format!("http://{}", listener.local_addr()?);
    let seen: Arc<Mutex<Vec<Request>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (seen2, stop2, routes) = (seen.clone(), stop.clone(), Arc::new(routes));
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => {
                    let (routes, seen) = (routes.clone(), seen2.clone());
                    std::thread::spawn(move || {
                        let _ = answer(stream, &routes, &seen);
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    Ok(Server { base, seen, stop })
}

/// Reads the request line and headers.
fn read_request(stream: &TcpStream) -> std::io::Result<Request> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or("").to_owned();
    let path = words
        .next()
        .unwrap_or("")
        .trim_start_matches('/')
        .to_owned();
    let (mut range, mut authorization) = (None, None);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = Some(value.trim().to_owned());
            if name.eq_ignore_ascii_case("range") {
                range = value;
            } else if name.eq_ignore_ascii_case("authorization") {
                authorization = value;
            }
        }
    }
    Ok(Request {
        method,
        path,
        range,
        authorization,
    })
}

/// `bytes=A-` or `bytes=A-B` as the byte span `A..=B` of a body of `len` bytes
/// (`None`: no or unreadable range, answer the whole body).
fn parse_range(range: Option<&str>, len: usize) -> Option<(usize, usize)> {
    let (start, end) = range?.strip_prefix("bytes=")?.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let end = match end.trim() {
        "" => len.saturating_sub(1),
        end => end.parse::<usize>().ok()?.min(len.saturating_sub(1)),
    };
    Some((start, end))
}

fn answer(
    mut stream: TcpStream,
    routes: &HashMap<String, Route>,
    seen: &Mutex<Vec<Request>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    let request = read_request(&stream)?;
    if let Ok(mut seen) = seen.lock() {
        seen.push(request.clone());
    }
    let Some(route) = routes.get(&request.path) else {
        return write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    };
    let body = route.body.as_slice();
    let mut head = String::new();
    for (name, value) in &route.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let part = match parse_range(request.range.as_deref(), body.len()) {
        Some((start, _)) if start >= body.len() => {
            return write!(
                stream,
                "HTTP/1.1 416 Range Not Satisfiable\r\n{head}Content-Range: bytes */{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                body.len()
            );
        }
        Some((start, end)) => {
            head.push_str(&format!(
                "Content-Range: bytes {start}-{end}/{}\r\n",
                body.len()
            ));
            write!(stream, "HTTP/1.1 206 Partial Content\r\n")?;
            &body[start..=end.max(start)]
        }
        None => {
            write!(stream, "HTTP/1.1 200 OK\r\n")?;
            body
        }
    };
    write!(
        stream,
        "{head}Content-Length: {}\r\nConnection: close\r\n\r\n",
        part.len()
    )?;
    if request.method != "HEAD" {
        let sent = route.cut_now(part.len()).unwrap_or(part.len());
        stream.write_all(&part[..sent])?;
    }
    stream.flush()
}

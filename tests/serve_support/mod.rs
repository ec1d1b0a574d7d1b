//! The `serve` binary under test: started on a free loopback port, killed on drop; a
//! blocking HTTP client; a reader of server-sent events.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use serde_json::Value;

pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf_tiny")
}

/// A running `serve`; killed on drop so no test leaks a process.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Serves the hf_tiny fixture with `extra` arguments.
    pub fn start(extra: &[&str]) -> Server {
        Self::start_model(&fixture_dir(), extra)
    }

    /// Serves the model directory `model` with `extra` arguments.
    pub fn start_model(model: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_serve"))
            .current_dir(std::env::temp_dir())
            .arg("--model")
            .arg(model)
            .args(["--addr", "127.0.0.1:0", "--device", "cpu"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let mut err = child.stderr.take().unwrap();
            let buf = stderr.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = err.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    buf.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&chunk[..n]));
                }
            });
        }
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("listening on http://") {
                    let _ = tx.send(rest.trim().to_string());
                }
            }
        });
        let mut server = Server {
            child,
            base: String::new(),
            stderr,
        };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => server.base = format!("http://{addr}"),
            Err(_) => panic!(
                "serve did not print its address; stderr: {}",
                server.stderr.lock().unwrap()
            ),
        }
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// HOST:PORT.
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn health(&self) -> Value {
        client()
            .get(self.url("/health"))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    pub fn complete(&self, body: &Value) -> (u16, Value) {
        let res = client()
            .post(self.url("/v1/completions"))
            .json(body)
            .send()
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().unwrap())
    }

    /// Waits for the process to end, at most `secs` seconds.
    pub fn wait_exit(&mut self, secs: u64) -> Option<ExitStatus> {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if t0.elapsed() > Duration::from_secs(secs) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM.
    #[cfg(unix)]
    pub fn terminate(&self) {
        let killed = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// Reads server-sent events: the `data:` payloads, in order, until the stream ends.
pub struct Sse<R: Read>(BufReader<R>);

impl<R: Read> Sse<R> {
    pub fn new(r: R) -> Self {
        Sse(BufReader::new(r))
    }

    /// The next event's data, or None at the end of the stream.
    pub fn next_data(&mut self) -> Option<String> {
        let mut data: Option<String> = None;
        loop {
            let mut line = String::new();
            if self.0.read_line(&mut line).unwrap_or(0) == 0 {
                return data;
            }
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if data.is_some() {
                    return data;
                }
                continue;
            }
            if let Some(d) = line.strip_prefix("data:") {
                let d = d.strip_prefix(' ').unwrap_or(d);
                match &mut data {
                    Some(s) => {
                        s.push('\n');
                        s.push_str(d);
                    }
                    None => data = Some(d.to_string()),
                }
            }
        }
    }

    pub fn rest(mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(d) = self.next_data() {
            out.push(d);
        }
        out
    }
}

/// A streaming completion's response (status 200 and an event stream checked).
pub fn stream_request(server: &Server, body: &Value) -> Response {
    let res = client()
        .post(server.url("/v1/completions"))
        .json(body)
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    res
}

pub fn wait_until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

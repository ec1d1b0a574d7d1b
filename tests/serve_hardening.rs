//! `serve` against slow, idle, numerous and standard OpenAI clients: header and body
//! timeouts (streaming untouched), the connection limit, SIGTERM with a half-sent request,
//! numbers checked in the type they are used as, the fields OpenAI clients send, and the
//! model's name. Each test starts its own server on a free loopback port.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use smelt::serve::http::{parse_completion, HttpOptions};

mod common;
mod serve_support;
use common::TempDir;
use serve_support::{client, fixture_dir, stream_request, wait_until, Server, Sse};

/// A raw connection to the server (what a slow or idle client is).
fn connect(s: &Server) -> TcpStream {
    let c = TcpStream::connect(s.addr()).unwrap();
    c.set_nodelay(true).unwrap();
    c
}

/// Whether the server closed `conn` within `secs` seconds (reading EOF or a reset); reads
/// at least once, and drops whatever the server sends before.
fn closed_within(conn: &mut TcpStream, secs: f64) -> bool {
    conn.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
        if t0.elapsed().as_secs_f64() >= secs {
            return false;
        }
    }
}

/// Everything the server sends on `conn` until it closes it (at most `secs` seconds).
fn read_until_closed(conn: &mut TcpStream, secs: u64) -> String {
    conn.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let t0 = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while t0.elapsed() < Duration::from_secs(secs) {
        match conn.read(&mut buf) {
            Ok(0) => return String::from_utf8_lossy(&out).into_owned(),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    panic!(
        "the connection is still open after {secs} s; received {:?}",
        String::from_utf8_lossy(&out)
    );
}

/// A completion request's head, announcing a body of `len` bytes.
fn post_head(len: usize) -> String {
    format!(
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    )
}

// ---------------------------------------------------------------------------------------
// Slow and idle clients, the connection limit, shutdown

#[test]
fn slow_headers_and_idle_connections_are_closed_after_the_header_timeout() {
    let s = Server::start(&["--header-timeout", "1"]);
    // Headers that trickle in, one line every 200 ms, and would go on for 20 s.
    let mut slow = connect(&s);
    let mut idle = connect(&s);
    let t0 = Instant::now();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut cut = false;
    for _ in 0..100 {
        if slow.write_all(b"X-Slow: 1\r\n").is_err() || closed_within(&mut slow, 0.2) {
            cut = true;
            break;
        }
    }
    assert!(cut, "a request whose headers never end was not cut off");
    assert!(t0.elapsed() >= Duration::from_millis(900), "cut too early");
    // A connection that never sends anything is gone by now as well.
    assert!(
        closed_within(&mut idle, 5.0),
        "an idle connection stays open"
    );
    // The server still answers others.
    assert_eq!(s.health()["status"], "ok");
}

#[test]
fn a_half_sent_body_gets_408_and_its_connection_closed() {
    let s = Server::start(&["--body-timeout", "1"]);
    let body = json!({"prompt": "The quick brown fox", "max_tokens": 2}).to_string();
    let mut conn = connect(&s);
    conn.write_all(post_head(body.len()).as_bytes()).unwrap();
    conn.write_all(&body.as_bytes()[..body.len() / 2]).unwrap();
    let answer = read_until_closed(&mut conn, 15);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let json_start = answer.find('{').unwrap();
    let v: Value = serde_json::from_str(&answer[json_start..]).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("body"),
        "{v}"
    );
    // A whole body sent at once is still fine.
    let (status, v) = s.complete(&json!({"prompt": "The quick brown fox", "max_tokens": 2}));
    assert_eq!(status, 200, "{v}");
}

#[test]
fn streaming_responses_outlive_the_timeouts() {
    let s = Server::start(&[
        "--header-timeout",
        "1",
        "--body-timeout",
        "1",
        "--max-tokens-limit",
        "1000000",
    ]);
    let body = json!({"prompt": "The quick brown fox", "max_tokens": 1_000_000, "temperature": 0,
                      "stream": true});
    let mut sse = Sse::new(stream_request(&s, &body));
    let t0 = Instant::now();
    let mut events = 0;
    while t0.elapsed() < Duration::from_secs(3) {
        let data = sse.next_data().expect("the stream was cut");
        let v: Value = serde_json::from_str(&data).unwrap();
        assert!(v["choices"][0]["finish_reason"].is_null(), "{v}");
        events += 1;
    }
    assert!(events > 1);
    drop(sse);
    wait_until("the slot is freed", 20, || s.health()["active"] == 0);
}

/// The server's open file descriptors (Linux).
#[cfg(target_os = "linux")]
fn open_fds(s: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", s.pid()))
        .unwrap()
        .count()
}

#[cfg(target_os = "linux")]
#[test]
fn connections_beyond_the_limit_wait_without_taking_descriptors() {
    let s = Server::start(&["--max-connections", "2", "--header-timeout", "60"]);
    std::thread::sleep(Duration::from_millis(200));
    let base = open_fds(&s);
    // Two idle clients take the two places.
    let idle: Vec<TcpStream> = (0..2).map(|_| connect(&s)).collect();
    wait_until("both are accepted", 10, || open_fds(&s) >= base + 2);
    // Thirty more wait in the listen backlog: no descriptor, no answer.
    let waiting: Vec<TcpStream> = (0..30).map(|_| connect(&s)).collect();
    let mut asking = connect(&s);
    asking
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    asking
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut buf = [0u8; 1024];
    match asking.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("a connection beyond the limit was served: {other:?}"),
    }
    assert!(
        open_fds(&s) <= base + 2,
        "{} descriptors open, {base} before",
        open_fds(&s)
    );
    // Places free up: the waiting connections are taken in turn (those that left close at
    // once), and the request is answered.
    drop(waiting);
    drop(idle);
    let answer = read_until_closed(&mut asking, 20);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"status\":\"ok\""), "{answer}");
}

#[cfg(unix)]
#[test]
fn sigterm_with_half_sent_requests_exits_within_the_grace_period() {
    let mut s = Server::start(&[
        "--shutdown-grace",
        "2",
        "--header-timeout",
        "600",
        "--body-timeout",
        "600",
    ]);
    let mut half_body = connect(&s);
    half_body.write_all(post_head(100).as_bytes()).unwrap();
    half_body.write_all(b"{\"prompt\": ").unwrap();
    let mut half_head = connect(&s);
    half_head
        .write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut idle = connect(&s);
    // Let the server take them in before the signal.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.health()["status"], "ok");
    s.terminate();
    let t0 = Instant::now();
    let status = s.wait_exit(15).unwrap_or_else(|| {
        panic!(
            "serve did not exit within 15 s of SIGTERM; stderr: {}",
            s.stderr()
        )
    });
    assert_eq!(status.code(), Some(0), "stderr: {}", s.stderr());
    // The grace period was waited for (the half-sent requests held), but not much more.
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    let err = s.stderr();
    assert!(err.contains("grace period"), "{err}");
    for conn in [&mut half_body, &mut half_head, &mut idle] {
        assert!(closed_within(conn, 5.0));
    }
}

#[test]
fn connection_flags_are_checked_and_documented() {
    let model = fixture_dir();
    let model = model.to_str().unwrap();
    for (flag, value) in [
        ("--max-connections", "0"),
        ("--header-timeout", "0"),
        ("--body-timeout", "-1"),
        ("--shutdown-grace", "nan"),
        ("--header-timeout", "1e300"),
        ("--model-name", " "),
    ] {
        let out = common::run_bin(
            env!("CARGO_BIN_EXE_serve"),
            &["--model", model, "--addr", "127.0.0.1:0", flag, value],
        );
        common::assert_clean_error(&out, flag);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    }
    let help = common::run_bin(env!("CARGO_BIN_EXE_serve"), &["--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--header-timeout",
        "--body-timeout",
        "--max-connections",
        "--shutdown-grace",
        "--model-name",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

// ---------------------------------------------------------------------------------------
// Request fields: numbers in the type they are used as, what OpenAI clients send

fn options() -> HttpOptions {
    HttpOptions {
        model_name: "run".into(),
        max_body_bytes: 1 << 20,
        body_timeout: Duration::from_secs(30),
        max_prompt_tokens: 64,
        max_tokens_limit: 100,
    }
}

/// The field a refused body names, and its status.
fn refusal(body: Value) -> (u16, Option<String>) {
    let e = parse_completion(body.to_string().as_bytes(), &options())
        .expect_err(&format!("accepted: {body}"));
    (e.status().as_u16(), e.param().map(str::to_string))
}

#[test]
fn numbers_are_checked_in_the_type_they_are_used_as() {
    for (body, field) in [
        // Valid as f64, 0 or infinite as the f32 that sampling uses.
        (json!({"prompt": "a", "top_p": 1e-300}), "top_p"),
        (json!({"prompt": "a", "top_p": 1e-46}), "top_p"),
        (json!({"prompt": "a", "temperature": 1e39}), "temperature"),
        (json!({"prompt": "a", "max_tokens": 1e3}), "max_tokens"),
        (
            json!({"prompt": "a", "max_tokens": 1u64 << 63}),
            "max_tokens",
        ),
        (json!({"prompt": "a", "seed": 1.5}), "seed"),
        (json!({"prompt": "a", "seed": 1e20}), "seed"),
        (json!({"prompt": "a", "n": 1.5}), "n"),
    ] {
        assert_eq!(refusal(body.clone()), (400, Some(field.into())), "{body}");
    }
    // At the edges of what f32 and u64 hold.
    let ok = parse_completion(
        json!({"prompt": "a", "top_p": 1e-30, "temperature": 1e-300, "seed": u64::MAX})
            .to_string()
            .as_bytes(),
        &options(),
    )
    .unwrap();
    assert!(ok.top_p > 0.0);
    assert_eq!(ok.temperature, 0.0);
    assert_eq!(ok.seed, Some(u64::MAX));
}

#[test]
fn top_p_that_is_zero_in_f32_is_a_400_not_a_500() {
    let s = Server::start(&[]);
    let (status, v) = s.complete(&json!({"prompt": "a", "top_p": 1e-300, "max_tokens": 2}));
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "top_p");
    assert_eq!(s.health()["active"], 0);
}

#[test]
fn generate_checks_its_sampling_flags_in_f32() {
    let model = fixture_dir();
    let model = model.to_str().unwrap();
    for (flag, value) in [("--top-p", "1e-300"), ("--temperature", "1e39")] {
        let out = common::run_bin(
            env!("CARGO_BIN_EXE_generate"),
            &["--model", model, "--prompt", "a", flag, value],
        );
        common::assert_clean_error(&out, flag);
    }
}

#[test]
fn what_openai_clients_send_is_accepted_at_its_off_values() {
    // As the openai and langchain clients send them.
    let body = json!({
        "model": "run", "prompt": ["The quick brown fox"], "max_tokens": 3, "temperature": 0.7,
        "top_p": 1, "n": 1, "best_of": 1, "echo": false, "logprobs": null,
        "frequency_penalty": 0, "presence_penalty": 0.0, "logit_bias": {}, "suffix": null,
        "user": "someone", "stream": false, "stop": null, "seed": null,
    });
    let req = parse_completion(body.to_string().as_bytes(), &options()).unwrap();
    assert_eq!(req.prompt, "The quick brown fox");
    assert_eq!(req.max_tokens, 3);
    assert!(!req.include_usage);
    let with_usage =
        json!({"prompt": "a", "stream": true, "stream_options": {"include_usage": true}});
    let req = parse_completion(with_usage.to_string().as_bytes(), &options()).unwrap();
    assert!(req.stream && req.include_usage);
    // Values this server cannot honour are refused, naming the field.
    for (body, field) in [
        (json!({"prompt": "a", "n": 2}), "n"),
        (json!({"prompt": "a", "best_of": 3}), "best_of"),
        (json!({"prompt": "a", "echo": true}), "echo"),
        (json!({"prompt": "a", "logprobs": 1}), "logprobs"),
        (json!({"prompt": "a", "logprobs": 0}), "logprobs"),
        (
            json!({"prompt": "a", "frequency_penalty": 0.5}),
            "frequency_penalty",
        ),
        (
            json!({"prompt": "a", "presence_penalty": -1}),
            "presence_penalty",
        ),
        (
            json!({"prompt": "a", "logit_bias": {"5": 10}}),
            "logit_bias",
        ),
        (json!({"prompt": "a", "suffix": "tail"}), "suffix"),
        (json!({"prompt": "a", "user": 5}), "user"),
        (json!({"prompt": ["a", "b"]}), "prompt"),
        (
            json!({"prompt": "a", "stream_options": {"include_usage": true}}),
            "stream_options",
        ),
        (
            json!({"prompt": "a", "stream": true, "stream_options": {"include_usage": 1}}),
            "stream_options",
        ),
        (
            json!({"prompt": "a", "stream": true, "stream_options": {"other": true}}),
            "stream_options",
        ),
        (json!({"prompt": "a", "top_k": 5}), "top_k"),
    ] {
        assert_eq!(refusal(body.clone()), (400, Some(field.into())), "{body}");
    }
    // Another model: 404, as OpenAI and vLLM answer.
    assert_eq!(
        refusal(json!({"prompt": "a", "model": "gpt-3.5-turbo-instruct"})),
        (404, Some("model".into()))
    );
}

#[test]
fn openai_client_requests_over_http_and_the_usage_chunk() {
    let s = Server::start(&[]);
    let body = json!({
        "model": "hf_tiny", "prompt": "The quick brown fox", "max_tokens": 5, "temperature": 0,
        "n": 1, "best_of": 1, "echo": false, "logprobs": null, "frequency_penalty": 0,
        "presence_penalty": 0, "logit_bias": {}, "suffix": null, "user": "u",
    });
    let (status, whole) = s.complete(&body);
    assert_eq!(status, 200, "{whole}");

    // stream_options.include_usage: every chunk has "usage": null, then one with no choices
    // and the usage, then [DONE] (OpenAI's shape).
    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    sbody["stream_options"] = json!({"include_usage": true});
    let events = Sse::new(stream_request(&s, &sbody)).rest();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let (usage_chunk, text_chunks) = chunks.split_last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"], whole["usage"]);
    assert_eq!(usage_chunk["id"], text_chunks[0]["id"]);
    let mut text = String::new();
    for c in text_chunks {
        assert!(c.get("usage").is_some_and(Value::is_null), "{c}");
        text.push_str(c["choices"][0]["text"].as_str().unwrap());
    }
    assert_eq!(text, whole["choices"][0]["text"].as_str().unwrap());
    assert_eq!(
        text_chunks.last().unwrap()["choices"][0]["finish_reason"],
        whole["choices"][0]["finish_reason"]
    );

    let res = client()
        .post(s.url("/v1/completions"))
        .json(&json!({"model": "checkpoint", "prompt": "a"}))
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
    let v: Value = res.json().unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");
    assert!(v["error"]["message"].as_str().unwrap().contains("hf_tiny"));
}

/// Copies the fixture model into `dir`.
fn copy_model(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture_dir().join(f), dir.join(f)).unwrap();
    }
}

fn served_name(s: &Server) -> Value {
    let v: Value = client()
        .get(s.url("/v1/models"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["data"][0]["id"].clone()
}

#[test]
fn a_train_runs_model_is_named_after_the_run() {
    let tmp = TempDir::new("serve-names");
    let run = tmp.path("shakespeare");
    copy_model(&run.join("checkpoint"));
    copy_model(&run.join("checkpoints/step_0000500"));
    copy_model(&tmp.path("my-model"));
    assert_eq!(
        smelt::serve::model_name(&run.join("checkpoint")),
        "shakespeare"
    );
    assert_eq!(
        smelt::serve::model_name(&run.join("checkpoints/step_0000500")),
        "shakespeare/step_0000500"
    );
    assert_eq!(smelt::serve::model_name(&tmp.path("my-model")), "my-model");

    let s = Server::start_model(&run.join("checkpoint"), &[]);
    assert_eq!(served_name(&s), "shakespeare");
    let (status, v) = s.complete(&json!({"model": "shakespeare", "prompt": "a", "max_tokens": 1}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "shakespeare");
    drop(s);
    let s = Server::start_model(&run.join("checkpoints/step_0000500"), &[]);
    assert_eq!(served_name(&s), "shakespeare/step_0000500");
    drop(s);
    let s = Server::start_model(&run.join("checkpoint"), &["--model-name", "bard"]);
    assert_eq!(served_name(&s), "bard");
    let (status, v) = s.complete(&json!({"model": "bard", "prompt": "a", "max_tokens": 1}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "bard");
}

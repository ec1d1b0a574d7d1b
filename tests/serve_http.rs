//! The `serve` binary over real HTTP: every endpoint, non-streaming and streaming
//! completions (greedy equal to `generate`'s output), each bad input answered 400 naming the
//! field, 413, 429, a client leaving mid-stream freeing its slot, and SIGTERM finishing the
//! request in flight before exiting 0. Each test starts its own server on a free port.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::blocking::Response;
use serde_json::{json, Value};

mod serve_support;
use serve_support::{client, fixture_dir, stream_request, wait_until, Server, Sse};

/// The events of a streaming completion: checks the shape of every chunk and returns
/// (concatenated text, finish_reason, usage).
fn check_stream(events: &[String]) -> (String, String, Value) {
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(!chunks.is_empty());
    let id = chunks[0]["id"].as_str().unwrap().to_string();
    let mut text = String::new();
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c["id"], json!(id));
        assert_eq!(c["object"], "text_completion");
        assert_eq!(c["model"], "hf_tiny");
        assert!(c["created"].as_u64().is_some());
        let choice = &c["choices"][0];
        assert_eq!(choice["index"], 0);
        assert!(choice["logprobs"].is_null());
        text.push_str(choice["text"].as_str().unwrap());
        if i + 1 < chunks.len() {
            assert!(choice["finish_reason"].is_null(), "{c}");
            assert!(c.get("usage").is_none(), "{c}");
        }
    }
    let last = chunks.last().unwrap();
    let reason = last["choices"][0]["finish_reason"]
        .as_str()
        .unwrap()
        .to_string();
    (text, reason, last["usage"].clone())
}

/// `generate --json` greedy output: (text, generated token ids).
fn generate_greedy(prompt: &str, n: usize) -> (String, Vec<u64>) {
    let out = Command::new(env!("CARGO_BIN_EXE_generate"))
        .current_dir(std::env::temp_dir())
        .arg("--model")
        .arg(fixture_dir())
        .args(["--prompt", prompt, "--temperature", "0", "--json"])
        .args(["--max-new-tokens", &n.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tokens = v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    (v["text"].as_str().unwrap().to_string(), tokens)
}

#[test]
fn endpoints_answer() {
    let s = Server::start(&[]);
    let h = s.health();
    assert_eq!(h, json!({"status": "ok", "active": 0, "queued": 0}));

    let m: Value = client()
        .get(s.url("/v1/models"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(m["object"], "list");
    assert_eq!(m["data"].as_array().unwrap().len(), 1);
    assert_eq!(m["data"][0]["id"], "hf_tiny");
    assert_eq!(m["data"][0]["object"], "model");

    let page = client().get(s.url("/")).send().unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().unwrap();
    assert!(html.contains("<textarea") && html.contains("/v1/completions"));
    assert!(html.contains("stream: true"));
    assert!(!html.contains("src=\"http"), "no external assets");

    let nf = client().get(s.url("/v1/nothing")).send().unwrap();
    assert_eq!(nf.status().as_u16(), 404);
    let e: Value = nf.json().unwrap();
    assert!(e["error"]["message"].is_string());
}

#[test]
fn greedy_completions_equal_generate_streaming_or_not() {
    let s = Server::start(&[]);
    for (prompt, n) in [("The quick brown fox", 20), ("Hello, world", 40), ("a", 1)] {
        let (want, want_tokens) = generate_greedy(prompt, n);
        let body = json!({"model": "hf_tiny", "prompt": prompt, "max_tokens": n, "temperature": 0});
        let (status, v) = s.complete(&body);
        assert_eq!(status, 200, "{v}");
        assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["model"], "hf_tiny");
        assert!(v["created"].as_u64().is_some());
        let choice = &v["choices"][0];
        assert_eq!(choice["text"], json!(want), "prompt {prompt:?}");
        assert_eq!(choice["index"], 0);
        assert!(choice["logprobs"].is_null());
        let reason = if want_tokens.len() == n {
            "length"
        } else {
            "stop"
        };
        assert_eq!(choice["finish_reason"], reason);
        let u = &v["usage"];
        assert_eq!(u["completion_tokens"], json!(want_tokens.len()));
        assert!(u["prompt_tokens"].as_u64().unwrap() >= 1);
        assert_eq!(
            u["total_tokens"].as_u64(),
            Some(u["prompt_tokens"].as_u64().unwrap() + want_tokens.len() as u64)
        );

        let mut sbody = body.clone();
        sbody["stream"] = json!(true);
        let events = Sse::new(stream_request(&s, &sbody)).rest();
        let (text, sreason, usage) = check_stream(&events);
        assert_eq!(text, want, "streamed pieces, prompt {prompt:?}");
        assert_eq!(sreason, reason);
        assert_eq!(&usage, u);
    }
    // Sampling with a seed is repeatable; the defaults (temperature 1, 16 tokens) apply.
    let body = json!({"prompt": "The quick brown fox", "seed": 7});
    let (_, a) = s.complete(&body);
    let (_, b) = s.complete(&body);
    assert_eq!(a["choices"][0]["text"], b["choices"][0]["text"]);
    assert!(a["usage"]["completion_tokens"].as_u64().unwrap() <= 16);
    let (status, _) =
        s.complete(&json!({"prompt": "x", "top_p": 0.5, "temperature": 2, "stop": null}));
    assert_eq!(status, 200);
}

#[test]
fn stop_strings_cut_the_text_streaming_or_not() {
    let s = Server::start(&[]);
    let prompt = "Hello, world";
    let (full, _) = generate_greedy(prompt, 40);
    let chars: Vec<(usize, char)> = full.char_indices().collect();
    assert!(
        chars.len() >= 8,
        "the fixture's greedy text is too short: {full:?}"
    );
    // A stop string from the middle of the greedy text, and one that never occurs.
    let (a, b) = (chars[chars.len() / 2].0, chars[chars.len() / 2 + 2].0);
    let stop = full[a..b].to_string();
    let want = &full[..full.find(&stop).unwrap()];
    let body = json!({"prompt": prompt, "max_tokens": 40, "temperature": 0,
                      "stop": [stop, "\u{1F600}never"]});
    let (status, v) = s.complete(&body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["text"], json!(want));
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() < 40);

    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    let events = Sse::new(stream_request(&s, &sbody)).rest();
    let (text, reason, usage) = check_stream(&events);
    assert_eq!(text, want);
    assert_eq!(reason, "stop");
    assert_eq!(usage, v["usage"]);
    // The stop string as a plain string works too.
    let body = json!({"prompt": prompt, "max_tokens": 40, "temperature": 0, "stop": full[a..b]});
    let (_, v2) = s.complete(&body);
    assert_eq!(v2["choices"][0]["text"], json!(want));
    wait_until("slots freed after stops", 10, || s.health()["active"] == 0);
}

#[test]
fn bad_requests_are_400_naming_the_field() {
    let s = Server::start(&["--max-tokens-limit", "100"]);
    let long_prompt = "The quick brown fox jumps over the lazy dog. ".repeat(20);
    let cases: Vec<(Value, Option<&str>)> = vec![
        (json!({}), Some("prompt")),
        (json!({"prompt": ""}), Some("prompt")),
        (json!({"prompt": 5}), Some("prompt")),
        (json!({"prompt": ["a", "b"]}), Some("prompt")),
        (json!({"prompt": long_prompt}), Some("prompt")),
        (json!({"prompt": "a", "max_tokens": 0}), Some("max_tokens")),
        (
            json!({"prompt": "a", "max_tokens": 101}),
            Some("max_tokens"),
        ),
        (
            json!({"prompt": "a", "max_tokens": "5"}),
            Some("max_tokens"),
        ),
        (
            json!({"prompt": "a", "max_tokens": 2.5}),
            Some("max_tokens"),
        ),
        (json!({"prompt": "a", "max_tokens": -1}), Some("max_tokens")),
        (
            json!({"prompt": "a", "temperature": 2.5}),
            Some("temperature"),
        ),
        (
            json!({"prompt": "a", "temperature": -0.1}),
            Some("temperature"),
        ),
        (
            json!({"prompt": "a", "temperature": "hot"}),
            Some("temperature"),
        ),
        (json!({"prompt": "a", "top_p": 0}), Some("top_p")),
        (json!({"prompt": "a", "top_p": 1.5}), Some("top_p")),
        (
            json!({"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}),
            Some("stop"),
        ),
        (json!({"prompt": "a", "stop": [""]}), Some("stop")),
        (json!({"prompt": "a", "stop": ""}), Some("stop")),
        (json!({"prompt": "a", "stop": 5}), Some("stop")),
        (json!({"prompt": "a", "stop": ["a", 5]}), Some("stop")),
        (json!({"prompt": "a", "seed": -1}), Some("seed")),
        (json!({"prompt": "a", "seed": "x"}), Some("seed")),
        (json!({"prompt": "a", "stream": "yes"}), Some("stream")),
        (json!({"prompt": "a", "model": 3}), Some("model")),
        (json!({"prompt": "a", "n": 2}), Some("n")),
        (json!({"prompt": "a", "top_k": 5}), Some("top_k")),
        (json!([1, 2]), None),
    ];
    for (body, param) in cases {
        let (status, v) = s.complete(&body);
        assert_eq!(status, 400, "{body} → {v}");
        let e = &v["error"];
        assert_eq!(e["type"], "invalid_request_error", "{body}");
        assert_eq!(e["param"], json!(param), "{body} → {v}");
        assert!(e["code"].is_null());
        assert!(!e["message"].as_str().unwrap().is_empty());
    }
    for raw in ["not json", "{\"prompt\": \"a\",}", ""] {
        let res = client()
            .post(s.url("/v1/completions"))
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .unwrap();
        assert_eq!(res.status().as_u16(), 400, "{raw:?}");
        let v: Value = res.json().unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["param"].is_null());
    }
    assert_eq!(s.health()["active"], 0);
}

#[test]
fn body_over_the_limit_is_413() {
    let s = Server::start(&["--max-body-bytes", "1000"]);
    let body = json!({"prompt": "x".repeat(5000)});
    let res = client()
        .post(s.url("/v1/completions"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 413);
    let v: Value = res.json().unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("1000"));
    // Just under the limit is fine.
    let (status, _) = s.complete(&json!({"prompt": "hi", "max_tokens": 2}));
    assert_eq!(status, 200);
}

/// A streaming request that would run for a very long time, with its first chunk read.
fn long_stream(s: &Server) -> Sse<Response> {
    // Greedy: this tiny model never produces <|endoftext|> after this prompt.
    let body = json!({"prompt": "The quick brown fox", "max_tokens": 1_000_000, "temperature": 0,
                      "stream": true});
    let mut sse = Sse::new(stream_request(s, &body));
    let first: Value = serde_json::from_str(&sse.next_data().unwrap()).unwrap();
    assert!(first["choices"][0]["finish_reason"].is_null());
    sse
}

#[test]
fn full_queue_is_429_and_a_client_leaving_frees_its_slot() {
    let s = Server::start(&[
        "--max-batch",
        "1",
        "--max-queue",
        "0",
        "--max-tokens-limit",
        "1000000",
    ]);
    let sse = long_stream(&s);
    assert_eq!(s.health()["active"], 1);
    let res = client()
        .post(s.url("/v1/completions"))
        .json(&json!({"prompt": "a", "max_tokens": 2}))
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 429);
    assert_eq!(res.headers()["retry-after"], "1");
    let v: Value = res.json().unwrap();
    assert_eq!(v["error"]["type"], "server_busy");
    assert!(v["error"]["message"].is_string());

    // The client goes away mid-stream: the generation is cancelled and the slot freed.
    drop(sse);
    wait_until("the slot is freed", 20, || {
        let h = s.health();
        h["active"] == 0 && h["queued"] == 0
    });
    let (status, v) = s.complete(&json!({"prompt": "a", "max_tokens": 2}));
    assert_eq!(status, 200, "{v}");

    // The same for a non-streaming request whose client goes away.
    let body = json!({"prompt": "The quick brown fox", "max_tokens": 1_000_000, "temperature": 0})
        .to_string();
    let mut conn = std::net::TcpStream::connect(s.base.trim_start_matches("http://")).unwrap();
    write!(
        conn,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    wait_until("the request runs", 20, || s.health()["active"] == 1);
    drop(conn);
    wait_until("the slot is freed", 20, || s.health()["active"] == 0);
}

#[cfg(unix)]
#[test]
fn sigterm_finishes_the_request_in_flight_then_exits_0() {
    let mut s = Server::start(&["--max-tokens-limit", "100000"]);
    let body = json!({"prompt": "The quick brown fox", "max_tokens": 3000, "temperature": 0,
                      "stream": true});
    let mut sse = Sse::new(stream_request(&s, &body));
    let first = sse.next_data().unwrap();
    let killed = Command::new("kill")
        .args(["-TERM", &s.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut events = vec![first];
    events.extend(sse.rest());
    let (_, reason, usage) = check_stream(&events);
    assert_eq!(reason, "length");
    assert_eq!(usage["completion_tokens"], 3000);
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "serve did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        status.code(),
        Some(0),
        "stderr: {}",
        s.stderr.lock().unwrap()
    );
    assert!(s.stderr.lock().unwrap().contains("shutting down"));
}

#[test]
fn bad_arguments_are_one_line() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_serve"))
            .current_dir(std::env::temp_dir())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let model = fixture_dir();
    let model = model.to_str().unwrap();
    let (code, err) = run(&[
        "--model",
        model,
        "--device",
        "cuda",
        "--addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("GPU serving is not available yet"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (code, err) = run(&["--model", model, "--max-prompt-tokens", "65"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--max-prompt-tokens"), "{err}");
    let (code, err) = run(&["--model", "/nonexistent/model"]);
    assert_eq!(code, Some(1));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (code, err) = run(&["--model", model, "--device", "tpu"]);
    assert_eq!(code, Some(1));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

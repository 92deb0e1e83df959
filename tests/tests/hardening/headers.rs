//! Hardening: ambiguous security headers, failed admin authentication, noise from malformed HTTP.

use crate::support::admin_money;
use e2e::*;
use protocol::signature::{self, headers};
use serde_json::json;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Sends `body` to `path` correctly signed, with `extra` headers appended after the real
/// ones (a second copy of a header when its name is one of them).
async fn processor_with(
    app: &TestApp,
    path: &str,
    body: &[u8],
    key: &str,
    extra: &[(&str, &str)],
) -> Resp {
    let (ts, sig) = processor_client::sign(&app.secret, crate_now(), path, body);
    let mut req = app.api.processor_request(
        path,
        processor_client::Signed {
            api_key: API_KEY,
            endpoint: path,
            signature: Some((ts.clone(), sig.clone())),
            idempotency_key: Some(key),
        },
    );
    for (name, value) in extra {
        // The same value twice is as ambiguous as two values: `SIG` stands for the real one.
        let value = match *value {
            "SIG" => sig.as_str(),
            "TS" => ts.as_str(),
            v => v,
        };
        req = req.append_header((*name, value));
    }
    app.send_request(req, body.to_vec()).await
}

/// An admin request with the given `Authorization` header values (none, one, or several).
async fn admin_as(
    app: &TestApp,
    method: &str,
    path: &str,
    authorization: &[&str],
    extra: &[(&str, &str)],
    body: Option<serde_json::Value>,
) -> Resp {
    let url = format!("{}{path}", app.base);
    let mut req = match method {
        "GET" => app.client.get(url),
        "PUT" => app.client.put(url),
        "POST" => app.client.post(url),
        m => panic!("method {m}"),
    };
    for a in authorization {
        req = req.append_header(("authorization", *a));
    }
    for (name, value) in extra {
        req = req.append_header((*name, *value));
    }
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    app.send_request(
        req.insert_header(("content-type", "application/json")),
        bytes,
    )
    .await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A route, what is tried, and the second copy of a header.
type Case<'a> = (&'a str, &'a str, (&'a str, &'a str));

/// Each of the processor's security headers sent twice is refused with the opaque 401 and
/// counted; nothing is booked and the idempotency key stays free. The first copy is always
/// the right one, so a "first wins" reading would approve.
async fn duplicate_processor_headers_are_refused(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let duplicate = |m: &authorizer::metrics::Metrics| {
        m.counter(
            "authorizer_signature_failures_total",
            &[("reason", "duplicate_header")],
        )
    };
    let other_sig = signature::sign(&app.secret, "1", "/elsewhere", b"{}");
    let cases: [Case; 10] = [
        (AUTH, "x-signature", (headers::SIGNATURE, &other_sig)),
        (AUTH, "x-signature, same value", (headers::SIGNATURE, "SIG")),
        (AUTH, "x-timestamp", (headers::TIMESTAMP, "1")),
        (AUTH, "x-timestamp, same value", (headers::TIMESTAMP, "TS")),
        (AUTH, "x-api-key", (headers::API_KEY, "another-key")),
        (AUTH, "x-endpoint", (headers::ENDPOINT, ADJ_CREDIT)),
        (
            AUTH,
            "x-idempotency-key",
            (headers::IDEMPOTENCY_KEY, "k-other"),
        ),
        (
            AUTH_DEBIT,
            "x-signature on debit",
            (headers::SIGNATURE, "SIG"),
        ),
        (
            ADJ_DEBIT,
            "x-api-key on an adjustment",
            (headers::API_KEY, API_KEY),
        ),
        (
            NOTIFY,
            "x-signature on a notification",
            (headers::SIGNATURE, "SIG"),
        ),
    ];
    for (i, (path, what, extra)) in cases.iter().enumerate() {
        let tx = Tx::new(&uid("ctx-dup"), "PURCHASE", "u1", "10.00", "ARS");
        let body = if *path == NOTIFY {
            tx.advice(&uid("ev"), "APPROVED", "APPROVED", &uid("nk"))
        } else {
            tx.body()
        };
        let key = uid("k-dup");
        let r = processor_with(&app, path, &body, &key, &[*extra]).await;
        assert_eq!(
            r.status,
            401,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.json()["error"]["code"], "unauthorized", "{what}");
        assert!(r.header(headers::SIGNATURE).is_none(), "{what}: not signed");
        assert_eq!(duplicate(&app.metrics), i as u64 + 1, "{what}: counted");
        let stored = app
            .admin("GET", &format!("/v1/transactions/{}", tx.id), None, None)
            .await;
        assert_eq!(stored.status, 404, "{what}: nothing stored");
        assert_eq!(app.available("u1", "ARS").await, "100.00", "{what}");
        if *path == AUTH {
            // The same request without the second copy goes through, under the same
            // idempotency key: the refused one reserved nothing.
            let r = processor_with(&app, path, &body, &key, &[]).await;
            app.assert_signed_status(&r, 200, path, what);
            assert_eq!(r.json()["status"], "APPROVED", "{what}");
            let refund = Tx::new(&uid("ctx-rf"), "REFUND", "u1", "10.00", "ARS").original(&tx.id);
            let r = app.send(ADJ_CREDIT, &refund).await;
            assert_eq!(r.status, 200, "{what}: refund");
            assert_eq!(app.available("u1", "ARS").await, "100.00", "{what}");
        }
    }
}

/// `Authorization` sent twice on the admin API is 400 in the JSON envelope, whatever the
/// copies hold, and changes nothing.
async fn duplicate_authorization_is_refused_on_the_admin_api(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let good = bearer(ADMIN_TOKEN);
    let pairs: [[&str; 2]; 3] = [
        [&good, &good],
        [&good, "Bearer wrong-token-0123456789"],
        ["Bearer wrong-token-0123456789", &good],
    ];
    for (i, pair) in pairs.iter().enumerate() {
        let r = admin_as(&app, "GET", "/v1/accounts/u1/ARS", pair, &[], None).await;
        assert_eq!(r.status, 400, "{i}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["error"]["code"], "duplicate_header", "{i}");
        assert!(r.json()["error"]["message"].as_str().is_some());
        let opened = admin_as(&app, "PUT", "/v1/accounts/u-dup/ARS", pair, &[], None).await;
        assert_eq!(opened.status, 400, "{i}");
        let deposit = admin_as(
            &app,
            "POST",
            "/v1/accounts/u1/ARS/deposits",
            pair,
            &[("idempotency-key", "dep-dup")],
            Some(json!({"amount": "5.00"})),
        )
        .await;
        assert_eq!(deposit.status, 400, "{i}");
        assert_eq!(deposit.json()["error"]["code"], "duplicate_header");
    }
    let r = app.admin("GET", "/v1/accounts/u-dup/ARS", None, None).await;
    assert_eq!(r.status, 404, "no account was opened");
    assert_eq!(
        app.available("u1", "ARS").await,
        "100.00",
        "nothing deposited"
    );
    assert_eq!(
        app.metrics.counter(
            "authorizer_admin_auth_failures_total",
            &[("reason", "duplicate_header")]
        ),
        9
    );
    // Duplicates are not guesses: the address keeps its budget of failures.
    let r = admin_as(
        &app,
        "GET",
        "/v1/accounts/u1/ARS",
        &["Bearer nope-nope-nope-nope"],
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 401);
}

/// Sends wrong tokens until the address is refused; returns how many got 401 first and
/// the 429.
async fn guess_until_refused(app: &TestApp) -> (u32, Resp) {
    let forwarded = ["10.9.8.7", "192.0.2.1", "2001:db8::1"];
    for n in 0..60u32 {
        // Missing, wrong, other scheme, and a forged client address: all the same client.
        let auth: Vec<String> = match n % 3 {
            0 => vec![],
            1 => vec![bearer(&format!("guess-{n}-0123456789abcdef"))],
            _ => vec![format!("Basic {ADMIN_TOKEN}")],
        };
        let auth: Vec<&str> = auth.iter().map(String::as_str).collect();
        let xff = forwarded[n as usize % forwarded.len()];
        let r = admin_as(
            app,
            "GET",
            "/v1/accounts/u1/ARS",
            &auth,
            &[("x-forwarded-for", xff), ("x-real-ip", xff)],
            None,
        )
        .await;
        match r.status {
            401 => {}
            429 => return (n, r),
            s => panic!("guess {n}: status {s}"),
        }
    }
    panic!("60 wrong tokens were never refused");
}

fn retry_after(r: &Resp) -> u64 {
    r.header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds")
}

fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line_start} not in /metrics:\n{text}"))
}

/// Wrong tokens from one address are braked after the burst (10 by default) with 429 and
/// Retry-After; forged forwarding headers do not help; the valid token is still served from
/// that address; both are counted on /metrics.
async fn failed_admin_authentications_are_limited_per_address(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let t0 = Instant::now();
    let (passed, refused) = guess_until_refused(&app).await;
    // 10 at once, then 1 a second.
    let elapsed = t0.elapsed().as_secs_f64();
    assert!(passed >= 10, "the burst passes: {passed}");
    assert!(
        f64::from(passed) <= 10.0 + elapsed + 1.0,
        "{passed} failures passed in {elapsed:.2} s"
    );
    assert_eq!(refused.json()["error"]["code"], "rate_limited");
    assert!((1..=2).contains(&retry_after(&refused)));
    // The valid token is checked and served from the same address, reads and writes.
    assert_eq!(app.available("u1", "ARS").await, "100.00");
    let r = admin_money(&app, "deposits", "u1", "ARS", "5.00").await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(app.available("u1", "ARS").await, "105.00");
    // Its success does not reset the address's budget for the guesser.
    let (_, again) = guess_until_refused(&app).await;
    assert_eq!(again.status, 429);
    // Nor does another spelling of the path (`%76` is `v`): the router decodes it.
    let guess = bearer("guess-encoded-0123456789abcdef");
    let r = admin_as(&app, "GET", "/%761/accounts/u1/ARS", &[&guess], &[], None).await;
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    let text = String::from_utf8(app.get("/metrics").await.body).expect("text");
    let failures = metric(
        &text,
        "authorizer_admin_auth_failures_total{reason=\"invalid_token\"}",
    );
    let lockouts = metric(&text, "authorizer_admin_auth_lockouts_total");
    assert!(lockouts >= 2, "{lockouts}");
    assert!(failures >= u64::from(passed) + 2, "{failures}");
    assert!(text.contains("# HELP authorizer_admin_auth_lockouts_total"));
    // The processor's routes are not affected.
    let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "5.00", "ARS");
    let r = app.send(AUTH, &tx).await;
    assert_eq!(r.json()["status"], "APPROVED");
}

both_backends!(
    duplicate_processor_headers_are_refused,
    duplicate_authorization_is_refused_on_the_admin_api,
    failed_admin_authentications_are_limited_per_address,
);

/// The valid token's own rate limit still applies from a locked-out address.
#[actix_rt::test]
async fn the_valid_token_keeps_its_own_rate_limit_when_the_address_is_locked_out() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let app = TestApp::spawn_with(backend, |s| {
            s.admin.rate_per_sec = 1;
            s.admin.burst = 3;
            s.admin.auth_failures_burst = 2;
        })
        .await;
        let (passed, _) = guess_until_refused(&app).await;
        assert!((2..=4).contains(&passed), "{passed}");
        let mut served = 0;
        let limited = loop {
            let r = admin_as(
                &app,
                "GET",
                "/v1/accounts/nobody/ARS",
                &[&bearer(ADMIN_TOKEN)],
                &[],
                None,
            )
            .await;
            match r.status {
                404 => served += 1,
                429 => break r,
                s => panic!("status {s}"),
            }
            assert!(served < 20, "the valid token was never rate limited");
        };
        assert!(
            served >= 3,
            "{backend:?}: the token's burst passes: {served}"
        );
        assert!(
            limited.json()["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("Too many admin requests")),
            "{backend:?}: the token's own limit, not the address's"
        );
        assert!(retry_after(&limited) >= 1);
        assert_eq!(
            app.metrics
                .counter("authorizer_admin_rate_limited_total", &[]),
            1
        );
        app.stop().await;
    }
}

/// The real binary in a child process, killed if a test panics before stopping it: a
/// child left running would keep everything it inherited open.
struct Node(Option<std::process::Child>);

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts the real binary with logs in `dir`/server.log; returns it and its address.
fn start_node(dir: &std::path::Path, format: &str, filter: &str) -> (Node, String) {
    let log_path = dir.join("server.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_authorizer-node"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AUTHORIZER_CONFIG_DIR", dir.join("no-config"))
        .env("AUTHORIZER__SERVER__LISTEN", "127.0.0.1:0")
        .env("AUTHORIZER__SERVER__WORKERS", "2")
        .env("AUTHORIZER__DATABASE__DATA_DIR", dir)
        .env("AUTHORIZER__PROCESSOR__API_KEY", API_KEY)
        .env("AUTHORIZER__PROCESSOR__API_SECRET", API_SECRET)
        .env("AUTHORIZER__ADMIN__TOKEN", ADMIN_TOKEN)
        .env("AUTHORIZER__LOG__FORMAT", format)
        .env("AUTHORIZER__LOG__FILTER", filter)
        .stdout(Stdio::from(log.try_clone().expect("log file")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("authorizer-node starts");
    let until = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(addr) = text
            .split("listening on http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
        {
            break Ok(addr.to_owned());
        }
        if Instant::now() > until {
            break Err(text);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    match addr {
        Ok(addr) => (Node(Some(child)), addr),
        Err(text) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("node did not start:\n{text}");
        }
    }
}

/// Writes `bytes` on a fresh connection and returns what comes back until it closes.
fn raw(addr: &str, bytes: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(bytes).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Stops the node as an operator would (SIGINT), so that its logs are complete.
fn stop_node(mut node: Node) {
    let Some(mut child) = node.0.take() else {
        return;
    };
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status();
    let until = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Bytes that are not HTTP are answered 400 by the HTTP layer and never logged at ERROR
/// (an operator's false alarm); they are counted, and logged at debug when asked for.
#[test]
fn malformed_http_is_counted_and_not_logged_at_error() {
    let garbage: [&[u8]; 6] = [
        b"GARBAGE\x00\x01\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n",
        b"POST /v1/accounts/u1/ARS HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ];
    // The default filter in JSON, then an operator's own filter in text.
    for (format, filter) in [("json", "info"), ("text", "info,authorizer=debug")] {
        let dir = tempfile::tempdir().expect("dir");
        let (node, addr) = start_node(dir.path(), format, filter);
        for g in garbage {
            let answer = raw(&addr, g);
            assert!(
                answer.starts_with("HTTP/1.1 400"),
                "{format}: {:?} answered {answer:?}",
                String::from_utf8_lossy(g)
            );
        }
        let metrics = raw(
            &addr,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        stop_node(node);
        let counted = metric(&metrics, "authorizer_malformed_http_total");
        let logs = std::fs::read_to_string(dir.path().join("server.log")).expect("logs");
        assert_eq!(counted, garbage.len() as u64, "{format}:\n{logs}");
        assert!(
            logs.contains("listening on"),
            "{format}: logging works:\n{logs}"
        );
        assert!(
            !logs.contains("ERROR"),
            "{format}: malformed requests logged at ERROR:\n{logs}"
        );
        let debug_lines = logs
            .lines()
            .filter(|l| l.contains("malformed HTTP request answered 400"))
            .count();
        let expected = if filter.contains("debug") {
            garbage.len()
        } else {
            0
        };
        assert_eq!(debug_lines, expected, "{format}:\n{logs}");
    }
}

//! Transport security: HTTPS with a certificate made here, checked by a real TLS client, and
//! the processor routes' network allow-list (IPv4 and IPv6).

use e2e::receiver::TestCert;
use e2e::*;
use protocol::signature;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

fn client_config(trusted: &CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// One HTTP/1.1 exchange over TLS; `Err` when the handshake or the exchange fails.
fn https(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
    request: &[u8],
) -> Result<String, std::io::Error> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(request)?;
    let mut out = Vec::new();
    match tls.read_to_end(&mut out) {
        Ok(_) => {}
        // The server may close without close_notify after `Connection: close`.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
        Err(e) => return Err(e),
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// [`https`] on a blocking thread, so that the server (on this test's runtime) keeps running.
async fn https_async(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
    request: &[u8],
) -> Result<String, std::io::Error> {
    let (addr, request) = (addr.to_owned(), request.to_vec());
    tokio::task::spawn_blocking(move || https(&addr, config, &request))
        .await
        .expect("client thread")
}

fn signed_request(app: &TestApp, path: &str, body: &[u8], key: &str) -> Vec<u8> {
    app.signed_raw(path, body, key, "")
}

fn split(answer: &str) -> (u16, &str, &str) {
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((answer, ""));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head, body)
}

#[actix_rt::test]
async fn https_serves_the_processor_and_admin_routes() {
    let cert = TestCert::new();
    let (c, k) = (cert.pem_path.clone(), cert.key_path.clone());
    let app = TestApp::spawn_with(Backend::Sqlite, move |s| {
        s.server.tls.cert_path = c;
        s.server.tls.key_path = k;
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let config = client_config(&cert.der);
    // Admin calls over TLS.
    let open = format!(
        "PUT /v1/accounts/u1/ARS HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let a = https_async(&addr, config.clone(), open.as_bytes())
        .await
        .expect("TLS exchange");
    assert_eq!(split(&a).0, 201, "{a}");
    let deposit = r#"{"amount":"100.00"}"#;
    let dep = format!(
        "POST /v1/accounts/u1/ARS/deposits HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nIdempotency-Key: tls-1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{deposit}",
        deposit.len()
    );
    assert_eq!(
        split(
            &https_async(&addr, config.clone(), dep.as_bytes())
                .await
                .unwrap()
        )
        .0,
        201
    );
    // A signed purchase over TLS, answered signed.
    let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "10.00", "ARS");
    let answer = https_async(
        &addr,
        config.clone(),
        &signed_request(&app, AUTH, &tx.body(), &uid("k")),
    )
    .await
    .unwrap();
    let (status, head, body) = split(&answer);
    assert_eq!(status, 200, "{answer}");
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
            .unwrap_or_default()
    };
    signature::verify(
        &app.secret,
        &header("x-timestamp"),
        &header("x-endpoint"),
        body.as_bytes(),
        &header("x-signature"),
    )
    .expect("answer signed over its exact bytes");
    assert!(body.contains("APPROVED"), "{body}");
    // Plain HTTP to the TLS port gets no answer.
    let plain_addr = addr.clone();
    let out = tokio::task::spawn_blocking(move || {
        let mut plain = TcpStream::connect(&plain_addr).unwrap();
        plain
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        plain
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = Vec::new();
        let _ = plain.read_to_end(&mut out);
        out
    })
    .await
    .unwrap();
    assert!(
        !String::from_utf8_lossy(&out).contains("200 OK"),
        "plain HTTP must not be served"
    );
    // A client that does not trust this certificate refuses the handshake.
    let stranger = TestCert::new();
    let refused = https_async(
        &addr,
        client_config(&stranger.der),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(refused.is_err(), "{refused:?}");
    let get = format!(
        "GET /v1/accounts/u1/ARS HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"
    );
    let answer = https_async(&addr, config, get.as_bytes()).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(split(&answer).2).unwrap();
    assert_eq!(v["available"], "90.00");
    app.assert_audit_clean().await;
}

#[actix_rt::test]
async fn a_bad_certificate_or_key_stops_the_start() {
    let cert = TestCert::new();
    let other = TestCert::new();
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a pem file").unwrap();
    let garbage = garbage.display().to_string();
    for (c, k, want) in [
        (
            cert.pem_path.clone(),
            other.key_path.clone(),
            "do not form a usable pair",
        ),
        (garbage.clone(), cert.key_path.clone(), "no certificate"),
        (
            cert.pem_path.clone(),
            garbage.clone(),
            "no readable PEM private key",
        ),
        (
            "/nonexistent/cert.pem".to_owned(),
            cert.key_path.clone(),
            "cannot read",
        ),
    ] {
        let mut settings =
            authorizer::Settings::load_from(std::path::Path::new("/nonexistent"), &[]).unwrap();
        settings.server.listen = "127.0.0.1:0".into();
        settings.database.data_dir = dir.path().to_path_buf();
        settings.server.tls.cert_path = c;
        settings.server.tls.key_path = k;
        let creds = authorizer::credentials::resolve(&settings, true).unwrap();
        let err = match authorizer::Application::build(settings, creds).await {
            Ok(_) => panic!("started with a bad certificate or key"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(want), "{err}");
        assert!(!err.contains("PRIVATE KEY"), "{err}");
    }
}

async fn processor_call(app: &TestApp) -> Resp {
    let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "1.00", "ARS");
    app.send(AUTH, &tx).await
}

/// A server (listening on `listen`, else the default) that serves the processor only to
/// `networks`, with u1 funded with 100.00 ARS.
async fn funded_behind(listen: Option<&str>, networks: &[&str]) -> TestApp {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        if let Some(l) = listen {
            s.server.listen = l.into();
        }
        s.processor.allowed_networks = networks.iter().map(|n| n.to_string()).collect();
    })
    .await;
    app.funded("u1", "ARS", "100.00").await;
    app
}

#[actix_rt::test]
async fn allow_list_refuses_other_networks_with_403() {
    // The admin API is not behind the allow-list (it has its token).
    let app = funded_behind(None, &["10.0.0.0/8", "192.168.0.0/16"]).await;
    let r = processor_call(&app).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "forbidden_network");
    assert!(r.header("x-signature").is_none());
    // A forwarding header claiming an allowed address changes nothing.
    let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "1.00", "ARS");
    let body = tx.body();
    let ts = crate_now().to_string();
    let res = app
        .client
        .post(format!("{}{AUTH}", app.base))
        .insert_header(("x-forwarded-for", "10.1.2.3"))
        .insert_header(("forwarded", "for=10.1.2.3"))
        .insert_header(("x-real-ip", "10.1.2.3"))
        .insert_header(("x-api-key", API_KEY))
        .insert_header(("x-timestamp", ts.as_str()))
        .insert_header(("x-endpoint", AUTH))
        .insert_header((
            "x-signature",
            signature::sign(&app.secret, &ts, AUTH, &body),
        ))
        .insert_header(("x-idempotency-key", uid("k")))
        .send_body(body)
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);
    // Another spelling of the route (`%61` is `a`) is refused too, in the route's one series.
    let other = format!("{}/transactions/%61uthorizations", app.base);
    let res = app.client.post(other).send_body("{}").await.unwrap();
    assert_eq!(res.status().as_u16(), 403);
    assert_eq!(app.get("/healthz").await.status, 200);
    assert_eq!(
        app.metrics.counter("authorizer_forbidden_peers_total", &[]),
        3
    );
    let text = String::from_utf8(app.get("/metrics").await.body).unwrap();
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("authorizer_forbidden_peers_total{"))
        .collect();
    assert_eq!(series.len(), 1, "{series:?}");
    assert!(
        series[0].contains(&format!("route=\"{AUTH}\"")),
        "{series:?}"
    );
    let r = app.assert_audit_clean().await;
    assert_eq!(r.processor_transactions, 0, "nothing stored");
    assert_eq!(app.available("u1", "ARS").await, "100.00");
}

#[actix_rt::test]
async fn allow_list_admits_listed_ipv4_and_ipv6_peers() {
    let app = funded_behind(None, &["10.0.0.0/8", "127.0.0.1/32"]).await;
    assert_eq!(processor_call(&app).await.json()["status"], "APPROVED");
    // Over IPv6 loopback: admitted by ::1/128, refused when only IPv4 loopback is listed.
    for (networks, want) in [
        (&["::1/128"][..], 200),
        (&["2001:db8::/32", "127.0.0.0/8"][..], 403),
    ] {
        let app = funded_behind(Some("[::1]:0"), networks).await;
        assert!(app.base.starts_with("http://[::1]:"), "{}", app.base);
        assert_eq!(processor_call(&app).await.status, want);
    }
}

#[test]
fn allowed_networks_from_the_environment_and_bad_ones_refused() {
    let load = |v: &str| {
        authorizer::Settings::load_from(
            std::path::Path::new("/nonexistent"),
            &[(
                "AUTHORIZER__PROCESSOR__ALLOWED_NETWORKS".to_owned(),
                v.to_owned(),
            )],
        )
    };
    let s = load("10.0.0.0/8, ::1/128 ,").unwrap();
    assert_eq!(s.processor.allowed_networks, vec!["10.0.0.0/8", "::1/128"]);
    let err = load("10.0.0.0/8,10.0.0.1/8").unwrap_err().to_string();
    assert!(
        err.contains("processor.allowed_networks") && err.contains("host bits"),
        "{err}"
    );
    let err = load("everyone").unwrap_err().to_string();
    assert!(err.contains("processor.allowed_networks"), "{err}");
    let err = authorizer::Settings::load_from(
        std::path::Path::new("/nonexistent"),
        &[(
            "AUTHORIZER__SERVER__TLS__CERT_PATH".to_owned(),
            "/x.pem".to_owned(),
        )],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("set together"), "{err}");
}

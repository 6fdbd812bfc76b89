//! Security as a client meets it, against the real binary: where tokens are taken from and which role each
//! endpoint wants, API-key tokens, the Origin allow-list, the connection limits' close codes, TLS 1.3 (TLS 1.2
//! refused) and the key that signs order frames. The rules behind them are
//! unit tests: token checks in `net/src/auth.rs`, limits and origins in `limits.rs`, keys in `signing.rs`,
//! settings in `security.rs` and `config.rs`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{http, http_raw, metric, token, Client, Server, SECRET};
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

const SECS: Duration = Duration::from_secs(5);

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn sign(alg: jsonwebtoken::Algorithm, key: &jsonwebtoken::EncodingKey, claims: Value) -> String {
    jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, key).unwrap()
}

/// Opens a WebSocket with extra request headers, without reading anything after the 101.
fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<WebSocket<TcpStream>, tungstenite::Error> {
    let mut req = format!("ws://{addr}{path}").into_client_request()?;
    for (k, v) in headers {
        req.headers_mut().insert(tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(SECS))?;
    tungstenite::client(req, stream).map(|(ws, _)| ws).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => e,
        tungstenite::HandshakeError::Interrupted(_) => tungstenite::Error::ConnectionClosed,
    })
}

/// The HTTP status of a refused upgrade.
fn refused_status(r: Result<WebSocket<TcpStream>, tungstenite::Error>) -> u16 {
    match r {
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, got an upgrade"),
    }
}

/// The first frame after the upgrade: `Ok(text frame)` or `Err((close code, reason))`.
fn first_frame<S: Read + Write>(ws: &mut WebSocket<S>) -> Result<Value, (u16, String)> {
    loop {
        match ws.read().expect("a frame") {
            Message::Text(t) => return Ok(serde_json::from_str(&t).unwrap()),
            Message::Close(f) => return Err(f.map_or((1005, String::new()), |f| (f.code.into(), f.reason.to_string()))),
            _ => continue,
        }
    }
}

#[test]
fn tokens_from_every_source_and_the_role_each_endpoint_wants() {
    let public = fixture("jwt-rs256.pub");
    let args =
        ["--no-simulator", "--allow-anonymous", "false", "--jwt-public-key", &public, "--jwt-algorithm", "RS256"];
    let server = Server::start(&args);
    let addr = server.addr;
    // One bad token (a wrong secret; every other kind is a unit test of auth.rs) from each source, and none.
    let bad = sign(
        jsonwebtoken::Algorithm::HS256,
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret"),
        json!({"sub":"u","exp":now()+60}),
    );
    let good = token("u-1", "user");
    let sources = |t: &str| -> [(String, Vec<(&'static str, String)>); 3] {
        [
            ("/v1/stream".into(), vec![("Authorization", format!("Bearer {t}"))]),
            (format!("/v1/stream?token={t}"), vec![]),
            ("/v1/stream".into(), vec![("Cookie", format!("theme=dark; session={t}"))]),
        ]
    };
    assert_eq!(refused_status(open(addr, "/v1/stream", &[])), 401, "anonymous clients are off");
    for ((path, headers), (good_path, good_headers)) in sources(&bad).into_iter().zip(sources(&good)) {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(refused_status(open(addr, &path, &h)), 401, "{path} {h:?}");
        let h: Vec<(&str, &str)> = good_headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(first_frame(&mut open(addr, &good_path, &h).unwrap()).unwrap()["user_id"], "u-1");
    }
    // An identity provider's RS256 token, with its role.
    let rsa = jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(fixture("jwt-rs256.key")).unwrap()).unwrap();
    let idp = sign(jsonwebtoken::Algorithm::RS256, &rsa, json!({"sub":"idp-user","exp":now()+60,"role":"admin"}));
    assert_eq!(Client::connect(addr, "/v1/stream", Some(&idp)).unwrap().welcome["user_id"], "idp-user");

    let (user, publisher, admin) = (token("u", "user"), token("p", "publisher"), token("a", "admin"));
    let event = r#"{"channel":"system","data":{"level":"info","message":"hi"}}"#;
    for (path, method, body, wants) in [
        ("/api/publish", "POST", event, [401, 403, 202, 202, 202]),
        ("/api/admin/websocket-stats", "GET", "", [401, 403, 403, 200, 200]),
    ] {
        let got: Vec<u16> = [None, Some(&user), Some(&publisher), Some(&admin), Some(&idp)]
            .map(|t| http(addr, method, path, t.map(String::as_str), body).0)
            .into();
        assert_eq!(got, wants, "{method} {path} as nobody, user, publisher, admin, the RS256 admin");
    }
    // The admin stats take the token from the query and the session cookie too.
    let stats = "/api/admin/websocket-stats";
    let (status, v) = http(addr, "GET", &format!("{stats}?token={admin}"), None, "");
    let per_shard: u64 = v["shards"].as_array().unwrap().iter().map(|s| s["connections"].as_u64().unwrap()).sum();
    assert_eq!((status, &v["status"], v["activeConnections"].as_u64()), (200, &json!("healthy"), Some(per_shard)));
    let req = format!("GET {stats} HTTP/1.1\r\nCookie: theme=dark; session={admin}\r\nConnection: close\r\n\r\n");
    assert_eq!(http_raw(addr, req.as_bytes()).0, 200);
    assert_eq!(http(addr, "POST", stats, Some(&admin), "").0, 405);
    assert_eq!(http(addr, "POST", "/api/admin/debug/stall?ms=10", Some(&admin), "").0, 404, "a test aid, off");
    let bearer = |t: &str| format!("Bearer {t}");
    assert_eq!(refused_status(open(addr, "/v1/publish", &[])), 401);
    assert_eq!(refused_status(open(addr, "/v1/publish", &[("Authorization", &bearer(&user))])), 403);
    assert!(open(addr, "/v1/publish", &[("Authorization", &bearer(&publisher))]).is_ok());
}

#[test]
fn api_keys_buy_short_lived_tokens_and_only_allowed_origins_upgrade() {
    let server = Server::start(&[
        "--no-simulator",
        "--api-key",
        "key-alice-123=alice",
        "--allowed-origin",
        "https://app.example.com",
    ]);
    let addr = server.addr;
    let get = |key: &str| {
        let req = format!(
            "GET /api/ws/token HTTP/1.1\r\nHost: md.example:8443\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n"
        );
        let (status, body) = http_raw(addr, req.as_bytes());
        (status, serde_json::from_str::<Value>(&body).unwrap_or(Value::Null))
    };
    let (status, wrong) = get("key-bob-456");
    assert_eq!(status, 401);
    assert!(wrong["error"].is_string());
    let (status, v) = get("key-alice-123");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["url"], "ws://md.example:8443/v1/stream");
    assert_eq!(v["expires_at"].as_str().unwrap().len(), 27, "RFC 3339: {v}");
    let tok = v["token"].as_str().unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    let key = jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes());
    let claims = jsonwebtoken::decode::<Value>(tok, &key, &validation).unwrap().claims;
    assert_eq!((&claims["sub"], &claims["role"]), (&json!("alice"), &json!("user")));
    let ttl = claims["exp"].as_u64().unwrap() - now();
    assert!((290..=300).contains(&ttl), "300 s by default: {ttl}");
    assert_eq!(Client::connect(addr, &format!("/v1/stream?token={tok}"), None).unwrap().welcome["user_id"], "alice");
    assert_eq!(http(addr, "POST", "/api/ws/token", None, "").0, 405);

    assert_eq!(refused_status(open(addr, "/v1/stream", &[("Origin", "https://evil.example.com")])), 403);
    let mut ok = open(addr, "/v1/stream", &[("Origin", "https://app.example.com")]).unwrap();
    assert_eq!(first_frame(&mut ok).unwrap()["type"], "welcome");
    assert!(open(addr, "/v1/stream", &[]).is_ok(), "not a browser (no Origin): allowed");
}

#[test]
fn connection_limits_close_with_their_codes_and_a_closed_connection_frees_its_place() {
    let server = Server::start(&["--no-simulator", "--max-connections", "4", "--max-connections-per-user", "2"]);
    let bearer = format!("Bearer {}", token("u-1", "user"));
    let mut held: Vec<_> = (0..2).map(|_| server.connect(Some(&token("u-1", "user")))).collect();
    let mut third = open(server.addr, "/v1/stream", &[("Authorization", &bearer)]).unwrap();
    // Sending at once does not cost the client its close frame (the server lingers before closing).
    let _ = third.send(Message::text(r#"{"action":"subscribe","channel":"orders"}"#));
    assert_eq!(first_frame(&mut third), Err((1008, "connection limit exceeded".into())));
    // A whole close (ours, the server's reply, our socket closed) ends the session, which frees its place.
    let mut leaving = held.pop().unwrap();
    leaving.ws.close(None).unwrap();
    while leaving.ws.read().is_ok() {}
    drop(leaving);
    common::wait_for(SECS, "the closed session to end", || metric(server.addr, "tickwire_sessions") == 1.0);
    let mut again = open(server.addr, "/v1/stream", &[("Authorization", &bearer)]).unwrap();
    assert_eq!(first_frame(&mut again).expect("the freed place")["type"], "welcome");
    // The server's total: 1013 "try again later".
    let (_a, _b) = (server.connect(None), server.connect(None));
    let mut fifth = open(server.addr, "/v1/stream", &[]).unwrap();
    assert_eq!(first_frame(&mut fifth), Err((1013, "try again later".into())));
    let (_, status) = http(server.addr, "GET", "/api/ws/status", None, "");
    assert_eq!((status["max_connections"].as_u64(), status["active_connections"].as_u64()), (Some(4), Some(4)));
    assert!(metric(server.addr, "tickwire_connections_refused_total") >= 2.0);
}

#[test]
fn the_served_signing_key_verifies_live_order_frames() {
    let server = Server::start(&["--no-simulator"]);
    let (status, key) = http(server.addr, "GET", "/api/ws/signing-key", None, "");
    assert_eq!((status, &key["algorithm"]), (200, &json!("Ed25519")));
    let b64 = base64::engine::general_purpose::STANDARD;
    let public: [u8; 32] = b64.decode(key["public_key"].as_str().unwrap()).unwrap().try_into().expect("32 bytes");
    let verifier = ed25519_dalek::VerifyingKey::from_bytes(&public).unwrap();
    let mut c = server.connect(Some(&token("u-9", "user")));
    c.send(json!({"action":"subscribe","channel":"orders","id":"o"}));
    c.recv_until(SECS, |v| v["id"] == "o").unwrap();
    common::publish(server.addr, &json!({"channel":"orders","user_id":"u-9","data":{"order_id":"o-1","qty":100}}));
    // The signed bytes: the frame's `data` as sent (net/src/signing.rs has the rule's unit test).
    let text = c.recv_text(SECS).expect("the order");
    let data = text.split_once(",\"data\":").unwrap().1.rsplit_once(",\"signature\":").unwrap().0;
    let v: Value = serde_json::from_str(&text).unwrap();
    let sig: [u8; 64] = b64.decode(v["signature"].as_str().unwrap()).unwrap().try_into().expect("64 bytes");
    verifier.verify_strict(data.as_bytes(), &ed25519_dalek::Signature::from_bytes(&sig)).expect("it verifies");
}

fn client_config(cert: &str, versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider).with_protocol_versions(versions).unwrap();
    Arc::new(builder.with_root_certificates(roots).with_no_client_auth())
}

/// A TLS connection to the server, handshake done.
fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let mut sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(SECS))?;
    let mut conn = rustls::ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    Ok(rustls::StreamOwned::new(conn, sock))
}

#[test]
fn wss_with_tls_1_3_and_tls_1_2_refused_unless_allowed() {
    let dir = std::env::temp_dir().join(format!("tickwire-tls-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["dev-cert", "--cert", cert, "--key", key])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let server =
        Server::start(&["--no-simulator", "--tls-cert", cert, "--tls-key", key, "--api-key", "key-tls-12345=tls"]);

    let tls = tls_connect(server.addr, client_config(cert, &[&rustls::version::TLS13])).unwrap();
    assert_eq!(tls.conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    let req = format!("wss://localhost:{}/v1/stream", server.addr.port()).into_client_request().unwrap();
    let (mut ws, _) = tungstenite::client(req, tls).map_err(|e| format!("{e}")).unwrap();
    assert_eq!(first_frame(&mut ws).unwrap()["type"], "welcome");
    ws.send(Message::text(r#"{"action":"ping","id":"tls"}"#)).unwrap();
    assert_eq!(first_frame(&mut ws).unwrap()["id"], "tls");
    // REST over https, two requests on one connection, and the token endpoint's URL says wss.
    let mut tls = tls_connect(server.addr, client_config(cert, &[&rustls::version::TLS13])).unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    tls.write_all(
        b"GET /api/ws/token HTTP/1.1\r\nHost: localhost:9443\r\nX-API-Key: key-tls-12345\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut out = String::new();
    let _ = tls.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200") && out.matches("HTTP/1.1 200").count() == 2, "{out}");
    assert!(out.contains(r#""url":"wss://localhost:9443/v1/stream""#), "{out}");
    assert!(tls_connect(server.addr, client_config(cert, &[&rustls::version::TLS12])).is_err(), "TLS 1.2 refused");
    assert_eq!(http_raw(server.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").0, 0, "plain HTTP gets nothing");
    drop(server);

    let server = Server::start(&[
        "--no-simulator",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--tls-allow-1-2",
        "--handshake-timeout-s",
        "1",
    ]);
    let tls = tls_connect(server.addr, client_config(cert, &[&rustls::version::TLS12])).unwrap();
    assert_eq!(tls.conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    // A client that never starts its TLS handshake is dropped at the handshake deadline: not before it, and
    // within the read timeout (a loaded machine runs timers late).
    let started = Instant::now();
    let mut idle = TcpStream::connect(server.addr).unwrap();
    idle.set_read_timeout(Some(SECS)).unwrap();
    let _ = idle.read_to_end(&mut Vec::new());
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900) && took < SECS, "dropped after {took:?}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn sighup_rotates_the_certificate_under_load_and_connections_stay() {
    let dir = std::env::temp_dir().join(format!("tickwire-tls-rotate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    for pair in ["a", "b"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
            .args([
                "dev-cert",
                "--cert",
                &path(&format!("{pair}-cert.pem")),
                "--key",
                &path(&format!("{pair}-key.pem")),
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    std::fs::copy(path("a-cert.pem"), path("cert.pem")).unwrap();
    std::fs::copy(path("a-key.pem"), path("key.pem")).unwrap();
    let server = Server::start_env(
        &["--no-simulator", "--tls-cert", &path("cert.pem"), "--tls-key", &path("key.pem")],
        &[("RUST_LOG", "info")],
    );
    let (trusts_a, trusts_b) = (
        client_config(&path("a-cert.pem"), &[&rustls::version::TLS13]),
        client_config(&path("b-cert.pem"), &[&rustls::version::TLS13]),
    );
    assert!(tls_connect(server.addr, trusts_b.clone()).is_err(), "the first certificate serves");
    // A subscriber over the first certificate, and a publisher at a steady rate throughout.
    let tls = tls_connect(server.addr, trusts_a.clone()).unwrap();
    let req = format!("wss://localhost:{}/v1/stream", server.addr.port()).into_client_request().unwrap();
    let (mut ws, _) = tungstenite::client(req, tls).map_err(|e| format!("{e}")).unwrap();
    assert_eq!(first_frame(&mut ws).unwrap()["type"], "welcome");
    ws.send(Message::text(r#"{"action":"subscribe","channel":"quotes","symbols":["ROT"],"id":"s"}"#)).unwrap();
    while first_frame(&mut ws).unwrap()["id"] != "s" {}
    // The publisher trusts both certificates: it goes on across the rotation, a connection per publish.
    let both = format!(
        "{}{}",
        std::fs::read_to_string(path("a-cert.pem")).unwrap(),
        std::fs::read_to_string(path("b-cert.pem")).unwrap()
    );
    std::fs::write(path("both.pem"), both).unwrap();
    let trusts_both = client_config(&path("both.pem"), &[&rustls::version::TLS13]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (addr, stop) = (server.addr, stop.clone());
        std::thread::spawn(move || {
            let token = token("pub", "publisher");
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let body = json!({"channel":"quotes","data":{"symbol":"ROT","bid":n,"ask":n}}).to_string();
                let mut tls = tls_connect(addr, trusts_both.clone()).expect("a handshake");
                let req = format!(
                    "POST /api/publish HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                tls.write_all(req.as_bytes()).unwrap();
                let mut out = String::new();
                let _ = tls.read_to_string(&mut out);
                assert!(out.starts_with("HTTP/1.1 202"), "{out}");
            }
            n
        })
    };
    let quote = |ws: &mut tungstenite::WebSocket<_>| loop {
        let v = first_frame(ws).expect("a frame");
        if v["type"] == "quote" {
            return v["sequence"].as_u64().unwrap();
        }
    };
    let before = quote(&mut ws);

    // The pair is replaced (as certbot does) and the server told.
    std::fs::copy(path("b-key.pem"), path("key.pem")).unwrap();
    std::fs::copy(path("b-cert.pem"), path("cert.pem")).unwrap();
    let pid = server.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    common::wait_for(SECS, "the reload", || {
        server.log.lock().unwrap().iter().any(|l| l.contains("TLS certificate reloaded"))
    });
    let fresh = tls_connect(server.addr, trusts_b).expect("new handshakes get the new certificate");
    drop(fresh);
    // (A fresh client: one that resumes an earlier session is not shown a certificate at all.)
    drop(trusts_a);
    let fresh_a = client_config(&path("a-cert.pem"), &[&rustls::version::TLS13]);
    assert!(tls_connect(server.addr, fresh_a).is_err(), "and no longer the old one");
    // The connection made before goes on, every update in order.
    let mut last = before;
    for _ in 0..20 {
        let s = quote(&mut ws);
        assert_eq!(s, last + 1, "no update lost across the reload");
        last = s;
    }
    // A pair that does not match is refused; the one in use stays.
    std::fs::copy(path("a-key.pem"), path("key.pem")).unwrap();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    common::wait_for(SECS, "the refusal", || server.log.lock().unwrap().iter().any(|l| l.contains("was not reloaded")));
    assert!(tls_connect(server.addr, client_config(&path("b-cert.pem"), &[&rustls::version::TLS13])).is_ok());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(publisher.join().unwrap() > 20);
    std::fs::remove_dir_all(dir).ok();
}

/// A fresh ES256 key of an identity provider: its signing key and its JWK under `kid`.
fn provider_key(kid: &str) -> (jsonwebtoken::EncodingKey, Value) {
    let pair = rcgen::KeyPair::generate().unwrap();
    let raw = pair.public_key_raw(); // 0x04, x, y
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                     "x": b64(&raw[1..33]), "y": b64(&raw[33..65])});
    (jsonwebtoken::EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(), jwk)
}

#[test]
fn an_identity_providers_issuer_audience_and_rotated_key_set() {
    let dir = std::env::temp_dir().join(format!("tickwire-jwks-rotate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks = dir.join("jwks.json");
    let (k1, jwk1) = provider_key("2026-11");
    let (k2, jwk2) = provider_key("2026-12");
    std::fs::write(&jwks, json!({"keys": [jwk1]}).to_string()).unwrap();
    let (iss, aud) = ("https://idp.example/realms/trading", "tickwire");
    let server = Server::start_env(
        &[
            "--no-simulator",
            "--allow-anonymous",
            "false",
            "--jwt-jwks",
            jwks.to_str().unwrap(),
            "--jwt-issuer",
            iss,
            "--jwt-audience",
            aud,
        ],
        &[("RUST_LOG", "info")],
    );
    let addr = server.addr;
    let signed = |key: &jsonwebtoken::EncodingKey, kid: &str, claims: Value| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    };
    let claims = |sub: &str, iss: &str, aud: &str| json!({"sub": sub, "exp": now() + 600, "iss": iss, "aud": aud});
    let stats = "/api/admin/websocket-stats";
    let refusal = |t: &str| {
        let (status, body) = http(addr, "GET", stats, Some(t), "");
        (status, body["error"].as_str().unwrap_or_default().to_owned())
    };
    // The provider's token with its issuer and this audience: in, with the role it carries.
    let good = signed(&k1, "2026-11", claims("idp-user", iss, aud));
    let mut stays = Client::connect(addr, "/v1/stream", Some(&good)).unwrap();
    assert_eq!(stays.welcome["user_id"], "idp-user");
    let admin =
        signed(&k1, "2026-11", json!({"sub": "ops", "exp": now() + 600, "iss": iss, "aud": aud, "role": "admin"}));
    assert_eq!(http(addr, "GET", stats, Some(&admin), "").0, 200);
    // Another issuer, another audience, a key not in the set: refused, each saying why.
    let (status, error) = refusal(&signed(&k1, "2026-11", claims("u", "https://evil.example/", aud)));
    assert!(status == 401 && error.contains("issuer"), "{status} {error}");
    let (status, error) = refusal(&signed(&k1, "2026-11", claims("u", iss, "billing")));
    assert!(status == 401 && error.contains("audience"), "{status} {error}");
    let next = signed(&k2, "2026-12", claims("idp-user", iss, aud));
    let (status, error) = refusal(&next);
    assert!(status == 401 && error.contains("2026-12"), "{status} {error}");
    // The server's own HS256 tokens must carry them too: one without is refused, `tickwire token` adds them.
    assert_eq!(
        refused_status(open(addr, "/v1/stream", &[("Authorization", &format!("Bearer {}", token("u", "user")))])),
        401
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["token", "--sub", "cli-user", "--jwt-secret", SECRET])
        .env("TICKWIRE_JWT_ISSUER", iss)
        .env("TICKWIRE_JWT_AUDIENCE", aud)
        .output()
        .unwrap();
    let cli = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(Client::connect(addr, "/v1/stream", Some(&cli)).unwrap().welcome["user_id"], "cli-user");

    // The provider rotates its keys and the server is told: the new key is in, the old one out.
    std::fs::write(&jwks, json!({"keys": [jwk2]}).to_string()).unwrap();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap()
        .success());
    common::wait_for(SECS, "the reload", || server.log.lock().unwrap().iter().any(|l| l.contains("JWT keys reloaded")));
    assert_eq!(Client::connect(addr, "/v1/stream", Some(&next)).unwrap().welcome["user_id"], "idp-user");
    let (status, error) = refusal(&good);
    assert!(status == 401 && error.contains("2026-11"), "{status} {error}");
    // A connection made with the old key stays.
    stays.send(json!({"action": "subscribe", "channel": "quotes", "symbols": ["JWK"], "id": "after"}));
    assert!(stays.recv_until(SECS, |v| v["id"] == "after").is_some());
    // A broken set is refused and the keys in use stay.
    std::fs::write(&jwks, "{\"keys\": [").unwrap();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap()
        .success());
    common::wait_for(SECS, "the refusal", || {
        server.log.lock().unwrap().iter().any(|l| l.contains("JWT keys were not reloaded"))
    });
    assert!(Client::connect(addr, "/v1/stream", Some(&next)).is_ok());
    std::fs::remove_dir_all(dir).ok();
}

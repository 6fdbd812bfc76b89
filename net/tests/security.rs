//! Security end to end, against the real binary: token checks and roles, API-key tokens, private isolation,
//! connection and message limits with their close codes, the Origin allow-list, the handshake deadline,
//! TLS 1.3 (and TLS 1.2 refused), and signed order frames checked with an independent Ed25519 library.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{http, http_raw, token, Client, Server, SECRET};
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

fn hs256(claims: Value) -> String {
    sign(jsonwebtoken::Algorithm::HS256, &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()), claims)
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

/// The first frame after the upgrade: `Ok(welcome)` or `Err((close code, reason))`.
fn first_frame(ws: &mut WebSocket<TcpStream>) -> Result<Value, (u16, String)> {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => return Ok(serde_json::from_str(&t).unwrap()),
            Ok(Message::Close(Some(f))) => return Err((u16::from(f.code), f.reason.to_string())),
            Ok(Message::Close(None)) => return Err((1005, String::new())),
            Ok(_) => continue,
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

#[test]
fn every_kind_of_bad_token_is_refused_with_401() {
    let server = Server::start(&["--no-simulator", "--allow-anonymous", "false"]);
    let addr = server.addr;
    let rsa = jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(fixture("jwt-rs256.key")).unwrap()).unwrap();
    let t = now();
    let cases = [
        ("missing", None),
        ("garbage", Some("not.a.jwt".to_owned())),
        (
            "bad signature",
            Some(sign(
                jsonwebtoken::Algorithm::HS256,
                &jsonwebtoken::EncodingKey::from_secret(b"another-secret"),
                json!({"sub":"u","exp":t+60}),
            )),
        ),
        ("expired", Some(hs256(json!({"sub":"u","exp":t-60})))),
        ("no exp", Some(hs256(json!({"sub":"u"})))),
        ("not yet valid", Some(hs256(json!({"sub":"u","exp":t+600,"nbf":t+300})))),
        (
            "wrong algorithm (RS256 without a configured key)",
            Some(sign(jsonwebtoken::Algorithm::RS256, &rsa, json!({"sub":"u","exp":t+60}))),
        ),
        (
            "wrong algorithm (HS512)",
            Some(sign(
                jsonwebtoken::Algorithm::HS512,
                &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
                json!({"sub":"u","exp":t+60}),
            )),
        ),
        (
            "alg none",
            Some(format!(
                "{}.{}.",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"u","exp":{}}}"#, t + 60))
            )),
        ),
        ("unknown role", Some(hs256(json!({"sub":"u","exp":t+60,"role":"root"})))),
    ];
    for (what, tok) in &cases {
        // Each source of the token: header, query, cookie.
        let (path, headers): (String, Vec<(&str, String)>) = match tok {
            None => ("/v1/stream".into(), vec![]),
            Some(tok) => ("/v1/stream".into(), vec![("Authorization", format!("Bearer {tok}"))]),
        };
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(refused_status(open(addr, &path, &h)), 401, "{what} (header)");
        if let Some(tok) = tok {
            assert_eq!(refused_status(open(addr, &format!("/v1/stream?token={tok}"), &[])), 401, "{what} (query)");
            let cookie = format!("theme=dark; session={tok}");
            assert_eq!(refused_status(open(addr, "/v1/stream", &[("Cookie", &cookie)])), 401, "{what} (cookie)");
        }
    }
    // A good token works from each source, and nbf in the past (within the leeway too) is fine.
    let good = hs256(json!({"sub":"u-1","exp":t+60,"nbf":t+2}));
    for (path, headers) in [
        (format!("/v1/stream?token={good}"), vec![]),
        ("/v1/stream".to_owned(), vec![("Cookie", format!("session={good}"))]),
        ("/v1/stream".to_owned(), vec![("Authorization", format!("Bearer {good}"))]),
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut ws = open(addr, &path, &h).unwrap();
        assert_eq!(first_frame(&mut ws).unwrap()["user_id"], "u-1");
    }
}

#[test]
fn rs256_and_es256_tokens_with_a_configured_public_key() {
    for (alg, name) in [(jsonwebtoken::Algorithm::RS256, "jwt-rs256"), (jsonwebtoken::Algorithm::ES256, "jwt-es256")] {
        let public = fixture(&format!("{name}.pub"));
        let algorithm = format!("{alg:?}");
        let server = Server::start(&[
            "--no-simulator",
            "--allow-anonymous",
            "false",
            "--jwt-public-key",
            &public,
            "--jwt-algorithm",
            &algorithm,
        ]);
        let pem = std::fs::read(fixture(&format!("{name}.key"))).unwrap();
        let key = match alg {
            jsonwebtoken::Algorithm::RS256 => jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap(),
            _ => jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap(),
        };
        let good = sign(alg, &key, json!({"sub":"idp-user","exp":now()+60,"role":"admin"}));
        let c = Client::connect(server.addr, &format!("/v1/stream?token={good}"), None).unwrap();
        assert_eq!(c.welcome["user_id"], "idp-user");
        let (status, _) = http(server.addr, "GET", "/api/admin/websocket-stats", Some(&good), "");
        assert_eq!(status, 200, "{algorithm}: the admin role of an identity-provider token counts");
        let expired = sign(alg, &key, json!({"sub":"idp-user","exp":now()-60}));
        assert_eq!(refused_status(open(server.addr, &format!("/v1/stream?token={expired}"), &[])), 401);
        // Algorithm confusion: an HS256 token keyed with the public key itself.
        let confused = sign(
            jsonwebtoken::Algorithm::HS256,
            &jsonwebtoken::EncodingKey::from_secret(&std::fs::read(&public).unwrap()),
            json!({"sub":"x","exp":now()+60}),
        );
        assert_eq!(refused_status(open(server.addr, &format!("/v1/stream?token={confused}"), &[])), 401);
        // The server's own HS256 tokens stay valid.
        assert!(Client::connect(server.addr, "/v1/stream", Some(&token("u-1", "user"))).is_ok());
    }
    // A public key without its algorithm is one clear error at start.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["--listen", "127.0.0.1:0", "--jwt-public-key", &fixture("jwt-rs256.pub")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--jwt-algorithm"));
}

#[test]
fn roles_are_enforced_on_every_endpoint() {
    let server = Server::start(&["--no-simulator"]);
    let addr = server.addr;
    let (user, publisher, admin) = (token("u", "user"), token("p", "publisher"), token("a", "admin"));
    let event = r#"{"channel":"system","data":{"level":"info","message":"hi"}}"#;
    assert_eq!(http(addr, "POST", "/api/publish", None, event).0, 401);
    assert_eq!(http(addr, "POST", "/api/publish", Some(&user), event).0, 403);
    assert_eq!(http(addr, "POST", "/api/publish", Some(&publisher), event).0, 202);
    assert_eq!(http(addr, "POST", "/api/publish", Some(&admin), event).0, 202);
    assert_eq!(http(addr, "GET", "/api/admin/websocket-stats", None, "").0, 401);
    assert_eq!(http(addr, "GET", "/api/admin/websocket-stats", Some(&user), "").0, 403);
    assert_eq!(http(addr, "GET", "/api/admin/websocket-stats", Some(&publisher), "").0, 403);
    assert_eq!(http(addr, "GET", "/api/admin/websocket-stats", Some(&admin), "").0, 200);
    let bearer = |t: &str| format!("Bearer {t}");
    assert_eq!(refused_status(open(addr, "/v1/publish", &[])), 401);
    assert_eq!(refused_status(open(addr, "/v1/publish", &[("Authorization", &bearer(&user))])), 403);
    assert!(open(addr, "/v1/publish", &[("Authorization", &bearer(&publisher))]).is_ok());
    // Every role may stream.
    for t in [&user, &publisher, &admin] {
        assert!(Client::connect(addr, "/v1/stream", Some(t)).is_ok());
    }
}

#[test]
fn api_keys_are_exchanged_for_short_lived_tokens() {
    let server = Server::start(&["--no-simulator", "--allow-anonymous", "false", "--api-key", "key-alice-123=alice"]);
    let addr = server.addr;
    let get = |key: Option<&str>| {
        let header = key.map(|k| format!("X-API-Key: {k}\r\n")).unwrap_or_default();
        let req = format!("GET /api/ws/token HTTP/1.1\r\nHost: md.example:8443\r\n{header}Connection: close\r\n\r\n");
        let (status, body) = http_raw(addr, req.as_bytes());
        (status, serde_json::from_str::<Value>(&body).unwrap_or(Value::Null))
    };
    assert_eq!(get(None).0, 401);
    assert_eq!(get(Some("key-alice-12")).0, 401);
    let (status, wrong) = get(Some("key-bob-456"));
    assert_eq!(status, 401);
    assert!(wrong["error"].is_string());
    let (status, v) = get(Some("key-alice-123"));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["url"], "ws://md.example:8443/v1/stream");
    let expires = v["expires_at"].as_str().unwrap();
    assert!(expires.ends_with('Z') && expires.len() == 27, "RFC 3339: {expires}");
    // The token is short-lived (300 s by default) and names the key's user with role user.
    let tok = v["token"].as_str().unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    let claims =
        jsonwebtoken::decode::<Value>(tok, &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()), &validation)
            .unwrap()
            .claims;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["role"], "user");
    let ttl = claims["exp"].as_u64().unwrap() - now();
    assert!((290..=300).contains(&ttl), "ttl {ttl}");
    let c = Client::connect(addr, &format!("/v1/stream?token={tok}"), None).unwrap();
    assert_eq!(c.welcome["user_id"], "alice");
    // Only GET.
    assert_eq!(http(addr, "POST", "/api/ws/token", None, "").0, 405);
}

#[test]
fn connection_limits_per_user_per_ip_and_total_close_with_their_codes() {
    // Per user: default 5 stream connections; the 6th gets 1008.
    let server = Server::start(&["--no-simulator"]);
    let bearer = format!("Bearer {}", token("u-1", "user"));
    let mut held: Vec<_> = (0..5).map(|_| server.connect(Some(&token("u-1", "user")))).collect();
    let mut sixth = open(server.addr, "/v1/stream", &[("Authorization", &bearer)]).unwrap();
    // Sending at once does not cost the client its close frame (the server lingers before closing).
    let _ = sixth.send(Message::text(r#"{"action":"subscribe","channel":"orders"}"#));
    assert_eq!(first_frame(&mut sixth), Err((1008, "connection limit exceeded".into())));
    // Another user is unaffected; a closed connection frees its place.
    assert!(Client::connect(server.addr, "/v1/stream", Some(&token("u-2", "user"))).is_ok());
    // A whole close: ours, the server's reply, then our socket closed, so that the server's session ends.
    let mut leaving = held.pop().unwrap();
    leaving.ws.close(None).unwrap();
    while leaving.ws.read().is_ok() {}
    drop(leaving);
    // A session frees its place before it stops counting, so with 4 sessions of u-1 left (and u-2's gone)
    // the place is free.
    common::wait_for(SECS, "the closed session to end", || metric(server.addr, "tickwire_sessions") == 4.0);
    let mut ws = open(server.addr, "/v1/stream", &[("Authorization", &bearer)]).unwrap();
    assert_eq!(first_frame(&mut ws).expect("the freed place")["type"], "welcome");
    drop(server);

    // Per IP and in total: 1013 "try again later".
    let server = Server::start(&["--no-simulator", "--max-connections-per-ip", "2", "--max-connections-per-user", "0"]);
    let _a = server.connect(None);
    let _b = server.connect(Some(&token("u", "user")));
    let mut third = open(server.addr, "/v1/stream", &[]).unwrap();
    assert_eq!(first_frame(&mut third), Err((1013, "try again later".into())));
    drop(server);
    let server = Server::start(&["--no-simulator", "--max-connections", "2"]);
    let _a = server.connect(None);
    let _b = server.connect(None);
    let mut third = open(server.addr, "/v1/stream", &[]).unwrap();
    assert_eq!(first_frame(&mut third), Err((1013, "try again later".into())));
    let (_, status) = http(server.addr, "GET", "/api/ws/status", None, "");
    assert_eq!(status["max_connections"], 2);
    assert_eq!(status["active_connections"], 2);
    assert!(metric(server.addr, "tickwire_connections_refused_total") >= 1.0);
}

/// The sum over shards of a metric of `/metrics`.
fn metric(addr: SocketAddr, name: &str) -> f64 {
    let (status, body) = http_raw(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn origin_allow_list_refuses_other_browsers_before_the_upgrade() {
    let server = Server::start(&["--no-simulator", "--allowed-origin", "https://app.example.com"]);
    let addr = server.addr;
    assert_eq!(refused_status(open(addr, "/v1/stream", &[("Origin", "https://evil.example.com")])), 403);
    assert_eq!(refused_status(open(addr, "/v1/stream", &[("Origin", "null")])), 403);
    let mut ok = open(addr, "/v1/stream", &[("Origin", "https://app.example.com")]).unwrap();
    assert_eq!(first_frame(&mut ok).unwrap()["type"], "welcome");
    // Not a browser (no Origin): allowed.
    assert!(open(addr, "/v1/stream", &[]).is_ok());
}

#[test]
fn a_client_that_never_finishes_its_request_is_dropped_at_the_deadline() {
    let server = Server::start(&["--no-simulator", "--handshake-timeout-s", "1"]);
    let started = Instant::now();
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(SECS)).unwrap();
    // Slowloris: a byte now and then, never the end of the head.
    s.write_all(b"GET /v1/stream HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut out = Vec::new();
    let writer = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || {
            for _ in 0..30 {
                std::thread::sleep(Duration::from_millis(100));
                if s.write_all(b"X").is_err() {
                    return;
                }
            }
        })
    };
    let _ = s.read_to_end(&mut out);
    let took = started.elapsed();
    writer.join().unwrap();
    // Not before the deadline; how late is bounded by the read timeout (a loaded machine runs timers late).
    assert!(took >= Duration::from_millis(900) && took < SECS, "dropped after {took:?}");
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 408"), "{}", String::from_utf8_lossy(&out));
}

/// The canonical signed bytes: the frame's `data` value as sent. The signature is the frame's last field.
fn data_bytes(frame: &str) -> &str {
    let start = frame.find(",\"data\":").expect("data") + ",\"data\":".len();
    let end = frame.rfind(",\"signature\":").expect("signature");
    &frame[start..end]
}

#[test]
fn order_frames_carry_an_ed25519_signature_of_their_data() {
    let server = Server::start(&["--no-simulator"]);
    let (status, key) = http(server.addr, "GET", "/api/ws/signing-key", None, "");
    assert_eq!(status, 200);
    assert_eq!(key["algorithm"], "Ed25519");
    let public: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(key["public_key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .expect("32 bytes");
    // An independent implementation (ed25519-dalek; the server signs with aws-lc-rs).
    let verifier = ed25519_dalek::VerifyingKey::from_bytes(&public).unwrap();

    let mut c = server.connect(Some(&token("u-9", "user")));
    c.send(json!({"action":"subscribe","channel":"orders","id":"o"}));
    c.send(json!({"action":"subscribe","channel":"quotes","symbols":["AAPL"],"id":"q"}));
    c.recv_until(SECS, |v| v["id"] == "q").unwrap();
    // The orders wait in the user's critical queue anyway; the quote must come as a quote, not a snapshot.
    common::settle(&mut c, &["AAPL"]);
    let publisher = token("oms", "publisher");
    for i in 0..3 {
        let event = json!({"channel":"orders","user_id":"u-9","data":{"order_id":format!("o-{i}"),"symbol":"AAPL","side":"buy","status":"new","qty":100,"limit_price":185.5,"note":"é \"q\""}});
        assert_eq!(http(server.addr, "POST", "/api/publish", Some(&publisher), &event.to_string()).0, 202);
    }
    let quote = json!({"channel":"quotes","data":{"symbol":"AAPL","bid":1.0,"ask":1.1}});
    assert_eq!(http(server.addr, "POST", "/api/publish", Some(&publisher), &quote.to_string()).0, 202);
    // The quote comes from another topic and may overtake the orders; keep it when it does.
    let mut quote_frame = None;
    let mut orders = 0;
    while orders < 3 {
        let text = c.recv_text(SECS).expect("an order frame");
        let v: Value = serde_json::from_str(&text).unwrap();
        if v["type"] == "quote" {
            quote_frame = Some(v);
            continue;
        }
        if v["type"] != "order" {
            continue;
        }
        let sig: [u8; 64] = base64::engine::general_purpose::STANDARD
            .decode(v["signature"].as_str().expect("signature field"))
            .unwrap()
            .try_into()
            .expect("64 bytes");
        let sig = ed25519_dalek::Signature::from_bytes(&sig);
        let data = data_bytes(&text);
        assert_eq!(serde_json::from_str::<Value>(data).unwrap(), v["data"]);
        verifier.verify_strict(data.as_bytes(), &sig).expect("the signature verifies");
        // Any other bytes do not.
        let tampered = data.replace("\"qty\":100", "\"qty\":900");
        assert!(verifier.verify_strict(tampered.as_bytes(), &sig).is_err());
        orders += 1;
    }
    // Public market data is not signed.
    let q = match quote_frame {
        Some(q) => q,
        None => c.recv_until(SECS, |v| v["type"] == "quote").expect("the quote"),
    };
    assert!(q.get("signature").is_none());
}

#[test]
fn a_configured_signing_key_survives_restarts() {
    let dir = std::env::temp_dir().join(format!("tickwire-signkey-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sign.pem");
    // PKCS#8 of an Ed25519 seed, written by hand (RFC 8410): the server must read what openssl writes.
    let seed = [7u8; 32];
    let mut der = vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    der.extend_from_slice(&seed);
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(&der)
    );
    std::fs::write(&path, pem).unwrap();
    let expected = base64::engine::general_purpose::STANDARD
        .encode(ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key().as_bytes());
    for _ in 0..2 {
        let server = Server::start(&["--no-simulator", "--signing-key", path.to_str().unwrap()]);
        let (_, key) = http(server.addr, "GET", "/api/ws/signing-key", None, "");
        assert_eq!(key["public_key"], expected.as_str());
    }
    std::fs::remove_dir_all(dir).ok();
}

// ---- TLS ----

fn dev_cert(dir: &std::path::Path) -> (String, String) {
    let cert = dir.join("cert.pem").to_str().unwrap().to_owned();
    let key = dir.join("key.pem").to_str().unwrap().to_owned();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["dev-cert", "--cert", &cert, "--key", &key])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

fn client_config(cert: &str, versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
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
fn wss_with_tls_1_3_and_tls_1_2_refused() {
    let dir = std::env::temp_dir().join(format!("tickwire-tls-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = dev_cert(&dir);
    let server =
        Server::start(&["--no-simulator", "--tls-cert", &cert, "--tls-key", &key, "--api-key", "key-tls-12345=tls"]);

    let tls = tls_connect(server.addr, client_config(&cert, &[&rustls::version::TLS13])).unwrap();
    assert_eq!(tls.conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    let req = format!("wss://localhost:{}/v1/stream", server.addr.port()).into_client_request().unwrap();
    let (mut ws, _) = tungstenite::client(req, tls).map_err(|e| format!("{e}")).unwrap();
    let welcome = first_frame_any(&mut ws);
    assert_eq!(welcome["type"], "welcome");
    ws.send(Message::text(r#"{"action":"ping","id":"tls"}"#)).unwrap();
    let pong = first_frame_any(&mut ws);
    assert_eq!(pong["id"], "tls");

    // REST over https, and the token endpoint's URL says wss.
    let mut tls = tls_connect(server.addr, client_config(&cert, &[&rustls::version::TLS13])).unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    tls.write_all(
        b"GET /api/ws/token HTTP/1.1\r\nHost: localhost:9443\r\nX-API-Key: key-tls-12345\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut out = String::new();
    let _ = tls.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains(r#""url":"wss://localhost:9443/v1/stream""#), "{out}");

    // A TLS 1.2-only client is refused.
    let refused = tls_connect(server.addr, client_config(&cert, &[&rustls::version::TLS12]));
    assert!(refused.is_err(), "TLS 1.2 must be refused by default");
    // Plain HTTP on the TLS port gets nothing useful.
    let (status, _) = http_raw(server.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 0);
    drop(server);

    // With --tls-allow-1-2 the same client gets in.
    let server = Server::start(&[
        "--no-simulator",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-allow-1-2",
        "--handshake-timeout-s",
        "1",
    ]);
    let tls = tls_connect(server.addr, client_config(&cert, &[&rustls::version::TLS12])).unwrap();
    assert_eq!(tls.conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    // A client that never starts its TLS handshake is dropped at the handshake deadline.
    let started = Instant::now();
    let mut idle = TcpStream::connect(server.addr).unwrap();
    idle.set_read_timeout(Some(SECS)).unwrap();
    let mut sink = Vec::new();
    let _ = idle.read_to_end(&mut sink);
    let took = started.elapsed();
    // Not before the deadline; how late is bounded by the read timeout (a loaded machine runs timers late).
    assert!(took >= Duration::from_millis(900) && took < SECS, "dropped after {took:?}");
    std::fs::remove_dir_all(dir).ok();
}

fn first_frame_any<S: Read + Write>(ws: &mut WebSocket<S>) -> Value {
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Close(f) => panic!("closed: {f:?}"),
            _ => continue,
        }
    }
}

#[test]
fn help_explains_every_security_flag() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tickwire")).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--jwt-public-key",
        "--jwt-algorithm",
        "--api-key",
        "--tls-cert",
        "--tls-key",
        "--tls-allow-1-2",
        "--max-connections ",
        "--max-connections-per-user",
        "--max-connections-per-ip",
        "--max-messages-per-s",
        "--allowed-origin",
        "--signing-key",
        "--handshake-timeout-s",
        "dev-cert",
    ] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("{flag} missing:\n{help}"));
        assert!(line.trim().len() > flag.len() + 20, "{flag} has no explanation: {line}");
    }
    let dev = std::process::Command::new(env!("CARGO_BIN_EXE_tickwire")).args(["dev-cert", "--help"]).output().unwrap();
    let dev = String::from_utf8(dev.stdout).unwrap();
    assert!(dev.contains("--cert") && dev.contains("--key") && dev.contains("--host"));
}

#[test]
fn api_keys_from_the_config_file_and_bad_security_settings_are_clear_errors() {
    let dir = std::env::temp_dir().join(format!("tickwire-seccfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("t.toml");
    std::fs::write(&file, "api_keys = [\"from-file-key-1=filer\"]\ntoken_ttl_s = 60\n").unwrap();
    let server = Server::start(&["--no-simulator", "--config", file.to_str().unwrap()]);
    let (status, body) =
        http_raw(server.addr, b"GET /api/ws/token HTTP/1.1\r\nX-API-Key: from-file-key-1\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let c = Client::connect(server.addr, &format!("/v1/stream?token={}", v["token"].as_str().unwrap()), None).unwrap();
    assert_eq!(c.welcome["user_id"], "filer");
    std::fs::remove_dir_all(dir).ok();

    for (args, says) in [
        (&["--tls-cert", "c.pem"][..], "--tls-cert and --tls-key go together"),
        (&["--api-key", "short=u"][..], "--api-key must be KEY=USER"),
        (&["--api-key", "no-equals-sign"][..], "--api-key must be KEY=USER"),
        (&["--jwt-public-key", "k.pem", "--jwt-algorithm", "HS256"][..], "--jwt-algorithm RS256 or ES256"),
        (&["--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem"][..], "cannot read TLS certificate"),
        (&["--signing-key", "/nonexistent/s.pem"][..], "cannot read the signing key"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
            .args(["--listen", "127.0.0.1:0", "--no-simulator"])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} must not start");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

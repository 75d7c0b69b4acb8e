//! TLS listeners (rustls), HTTP/2 from clients (ALPN h2, and h2c with prior
//! knowledge), plain HTTP on an https port, and https to a backend.

use crate::support::*;
use std::process::Command;
use std::time::Duration;

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl").args(args).output().expect("curl");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A one-listener config whose listener is https on `port` with `cert` and
/// `key`, in front of `app`.
fn https_config(port: u16, app: &DemoApp, cert: &std::path::Path, key: &std::path::Path) -> String {
    basic_config(port, &[app.addr.to_string()], "").replace(
        "listen = ",
        &format!(
            "protocol = \"https\"\ntls = {{ certificate = \"{}\", key = \"{}\" }}\nlisten = ",
            cert.display(),
            key.display()
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listener_speaks_h2_and_http11_and_refuses_plain_http() {
    let app = DemoApp::start();
    let dir = temp_dir("certs");
    let (ca, cert, key) = test_pki(&dir);
    let port = free_port();
    let config = https_config(port, &app, &cert, &key);
    let gw = Gateway::start_one_core("https", &config);
    let url = format!("https://localhost:{port}/headers");
    let (body, err) = curl(&[
        "-s",
        "--http2",
        "--cacert",
        &ca.display().to_string(),
        "-D",
        "-",
        &url,
    ]);
    assert!(body.starts_with("HTTP/2 200"), "{body}\n{err}");
    assert!(body.contains("\"x-forwarded-proto\":[\"https\"]"), "{body}");
    let txid = body
        .lines()
        .find_map(|l| l.strip_prefix("x-transaction-id: "))
        .expect("txid")
        .trim()
        .to_string();
    let rec = gw.record(&txid);
    let p = &rec["properties"];
    assert_eq!(p["httpVersion"], "HTTP/2.0");
    assert_eq!(p["sslEnabled"], "on");
    assert!(p["sslProtocol"].as_str().expect("s").starts_with("TLSv1."));
    // The gateway's order of suites, not the client's: curl (OpenSSL) asks
    // for AES-256-GCM first (tls.rs `SERVER_SUITES`).
    assert_eq!(p["sslCipher"], "TLS13_AES_128_GCM_SHA256");
    // A client that lists AES-256 first gets AES-128 all the same, on TLS 1.3
    // and on TLS 1.2 (the test certificate is RSA); one that offers only
    // another suite still gets it.
    for (version, option, offered, logged) in [
        (
            "1.3",
            "--tls13-ciphers",
            "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256",
            "TLS13_AES_128_GCM_SHA256",
        ),
        (
            "1.3",
            "--tls13-ciphers",
            "TLS_CHACHA20_POLY1305_SHA256",
            "TLS13_CHACHA20_POLY1305_SHA256",
        ),
        (
            "1.3",
            "--tls13-ciphers",
            "TLS_AES_256_GCM_SHA384",
            "TLS13_AES_256_GCM_SHA384",
        ),
        (
            "1.2",
            "--ciphers",
            "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        ),
    ] {
        let uri = format!("/status/200?suite={offered}");
        let (body, err) = curl(&[
            "-sS",
            "--tls-max",
            version,
            option,
            offered,
            "--cacert",
            &ca.display().to_string(),
            "-D",
            "-",
            &format!("https://localhost:{port}{uri}"),
        ]);
        assert!(body.starts_with("HTTP/"), "{body}\n{err}");
        let rec =
            gw.record_where(|r| r["properties"]["originalRequestUriWithArgs"] == uri.as_str());
        assert_eq!(rec["properties"]["sslCipher"], logged, "{rec}");
        assert_eq!(
            rec["properties"]["sslProtocol"],
            format!("TLSv{version}"),
            "{rec}"
        );
    }
    // Three requests on one HTTP/2 connection: each answer carries its own
    // x-transaction-id (an HPACK literal that is never indexed, since it never
    // repeats), the one in its record. (curl 7.88 cannot reuse an h2c
    // prior-knowledge connection, against nginx either, so this is over TLS.)
    let urls: Vec<String> = (0..3)
        .map(|i| format!("https://localhost:{port}/status/200?n={i}"))
        .collect();
    let ca_path = ca.display().to_string();
    let mut args = vec!["-s", "-i", "--http2", "--cacert", ca_path.as_str()];
    args.extend(urls.iter().map(String::as_str));
    let (heads, err) = curl(&args);
    let ids: Vec<String> = heads
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("x-transaction-id: "))
        .map(str::to_string)
        .collect();
    assert_eq!(ids.len(), 3, "{heads}\n{err}");
    assert!(err.is_empty(), "{err}");
    for (i, id) in ids.iter().enumerate() {
        let uri = format!("/status/200?n={i}");
        let rec = gw.record(id);
        assert_eq!(
            rec["properties"]["originalRequestUriWithArgs"],
            uri.as_str()
        );
        assert_eq!(rec["properties"]["httpVersion"], "HTTP/2.0");
    }
    assert!(ids[0] != ids[1] && ids[1] != ids[2], "{ids:?}");
    let (body, _) = curl(&[
        "-s",
        "--http1.1",
        "--cacert",
        &ca.display().to_string(),
        "-D",
        "-",
        &url,
    ]);
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    // Three HTTP/1.1 requests on one kept-alive TLS connection (on one core
    // the answers' TLS records go out through the batch writer, batch.rs).
    let mut args = vec!["-s", "-i", "--http1.1", "--cacert", ca_path.as_str()];
    args.extend(urls.iter().map(String::as_str));
    let (heads, err) = curl(&args);
    assert_eq!(heads.matches("HTTP/1.1 200").count(), 3, "{heads}\n{err}");
    assert!(err.is_empty(), "{err}");
    let h1_ids: Vec<&str> = heads
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("x-transaction-id: "))
        .collect();
    assert_eq!(h1_ids.len(), 3, "{heads}");
    let ports: Vec<String> = h1_ids
        .iter()
        .map(|id| gw.record(id)["properties"]["clientPort"].to_string())
        .collect();
    assert!(
        ports[0] != "null" && ports[0] == ports[1] && ports[1] == ports[2],
        "one connection: {ports:?}"
    );
    // Plain HTTP to the https port.
    let (text, closed) = raw_exchange(local(port), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(raw_status(&text), 400, "{text}");
    assert!(closed);
    let rec = gw.record(&raw_txid(&text));
    assert_eq!(
        rec["properties"]["error_info"],
        "ERRORINFO_HTTP_TO_HTTPS_PORT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_with_prior_knowledge() {
    let app = DemoApp::start();
    let port = free_port();
    let gw = Gateway::start_one_core("h2c", &basic_config(port, &[app.addr.to_string()], ""));
    let (body, err) = curl(&[
        "-s",
        "--http2-prior-knowledge",
        "-D",
        "-",
        &format!("http://127.0.0.1:{port}/status/202"),
    ]);
    assert!(body.starts_with("HTTP/2 202"), "{body}\n{err}");
    let rec = gw.record_where(|r| r["properties"]["requestUri"] == "/status/202");
    assert_eq!(rec["properties"]["httpVersion"], "HTTP/2.0");
    assert_eq!(rec["properties"]["serverStatus"], "202");
    // The record (written after the connection's write attempt, h2server.rs
    // `serve`) says the answer was sent.
    assert_eq!(rec["properties"]["error_info"], "ERRORINFO_NO_ERROR");
    assert!(rec["properties"]["sentBytes"].as_u64() > Some(0), "{rec}");
    // A 3 MB body: on one core the HTTP/2 frames leave through the batch
    // writer in bounded pieces (batch.rs, write-behind); all of it arrives.
    let out = Command::new("curl")
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-o",
            "-",
            &format!("http://127.0.0.1:{port}/bytes?n=3000000"),
        ])
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), 3_000_000);
    let rec =
        gw.record_where(|r| r["properties"]["originalRequestUriWithArgs"] == "/bytes?n=3000000");
    assert_eq!(rec["properties"]["httpStatus"], 200);
    assert_eq!(rec["properties"]["error_info"], "ERRORINFO_NO_ERROR");
    assert!(
        rec["properties"]["sentBytes"].as_u64() > Some(3_000_000),
        "{rec}"
    );
}

/// The task that drives an h2 client connection; it ends when the connection does.
type H2Driver = tokio::task::JoinHandle<Result<(), h2::Error>>;

/// An h2c client connection (prior knowledge) to the gateway on `port`, with
/// `h2`'s default settings, and the task that drives it.
async fn h2c_client(port: u16) -> (h2::client::SendRequest<bytes::Bytes>, H2Driver) {
    h2c_client_with(port, &h2::client::Builder::new()).await
}

/// The same with the client settings of `builder` (a small window, say).
async fn h2c_client_with(
    port: u16,
    builder: &h2::client::Builder,
) -> (h2::client::SendRequest<bytes::Bytes>, H2Driver) {
    let tcp = tokio::net::TcpStream::connect(local(port))
        .await
        .expect("connect");
    let (client, conn) = builder
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .expect("h2 handshake");
    (client, tokio::spawn(conn))
}

/// Waits for the gateway to close an idle h2 connection (at most 5 s) and
/// checks that it ended cleanly: GOAWAY with NO_ERROR.
async fn closed_cleanly_when_idle(ended: H2Driver) {
    let end = tokio::time::timeout(Duration::from_secs(5), ended)
        .await
        .expect("the idle connection is closed within 5 s")
        .expect("connection task");
    assert!(end.is_ok(), "{end:?}");
}

/// Opens a GET of `path` on `client` (which must still be open): the answer to
/// come, and the stream's sending half (to reset it).
async fn h2_open(
    client: &h2::client::SendRequest<bytes::Bytes>,
    port: u16,
    path: &str,
) -> (h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>) {
    let mut client = client.clone().ready().await.expect("still open");
    let req = http::Request::get(format!("http://127.0.0.1:{port}{path}"))
        .body(())
        .expect("request");
    client.send_request(req, true).expect("send")
}

/// Opens a POST of `path` on `client` (which must still be open) that declares
/// `content-length: declared`: the answer to come, and the stream to send the
/// body on.
async fn h2_post_open(
    client: &h2::client::SendRequest<bytes::Bytes>,
    port: u16,
    path: &str,
    declared: &str,
) -> (h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>) {
    let mut client = client.clone().ready().await.expect("still open");
    let req = http::Request::post(format!("http://127.0.0.1:{port}{path}"))
        .header("content-length", declared)
        .body(())
        .expect("request");
    client.send_request(req, false).expect("send")
}

/// The record of the request to `uri`, which must say `status` and
/// `ERRORINFO_INVALID_REQUEST`.
fn malformed_record(gw: &Gateway, uri: &str, status: u16) -> serde_json::Value {
    let rec = gw.record_where(|r| r["properties"]["originalRequestUriWithArgs"] == uri);
    assert_eq!(
        rec["properties"]["error_info"], "ERRORINFO_INVALID_REQUEST",
        "{rec:#}"
    );
    assert_eq!(rec["properties"]["httpStatus"], status, "{rec:#}");
    rec
}

/// GET `path` on `client`: the answer's head and body stream.
async fn h2_get(
    client: &h2::client::SendRequest<bytes::Bytes>,
    port: u16,
    path: &str,
) -> http::Response<h2::RecvStream> {
    h2_open(client, port, path).await.0.await.expect("answer")
}

/// HTTP/2 request bodies larger than the stream's receive window (1 MiB): the
/// window is opened again as the backend takes the body, so all of it arrives.
/// A stream the client resets while the backend works is logged 499 and the
/// connection goes on serving; a client that closes the connection mid-request
/// is logged 499 too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_request_bodies_and_streams_the_client_gives_up() {
    let app = DemoApp::start();
    let port = free_port();
    let gw = Gateway::start_one_core("h2body", &basic_config(port, &[app.addr.to_string()], ""));
    let dir = temp_dir("h2body");
    let upload = dir.join("upload.bin");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&upload, &data).expect("write");
    let out = Command::new("curl")
        .args([
            "-s",
            "--http2-prior-knowledge",
            "--max-time",
            "30",
            "--data-binary",
            &format!("@{}", upload.display()),
            "-H",
            "content-type: application/octet-stream",
            "-o",
            "-",
            "-D",
            &dir.join("head.txt").display().to_string(),
            &format!("http://127.0.0.1:{port}/echo?h2=upload"),
        ])
        .output()
        .expect("curl");
    let head = std::fs::read_to_string(dir.join("head.txt")).unwrap_or_default();
    assert!(head.starts_with("HTTP/2 200"), "{head}");
    assert!(out.stdout == data, "echoed {} bytes", out.stdout.len());
    let rec =
        gw.record_where(|r| r["properties"]["originalRequestUriWithArgs"] == "/echo?h2=upload");
    assert_eq!(rec["properties"]["httpVersion"], "HTTP/2.0");
    assert_eq!(rec["properties"]["httpStatus"], 200);
    let received = rec["properties"]["receivedBytes"]
        .as_u64()
        .expect("receivedBytes");
    assert!(received >= 3_000_000, "{received}");

    // A reset stream (RST_STREAM CANCEL) on a connection that stays open.
    let (client, _) = h2c_client(port).await;
    let (answer, mut stream) = h2_open(&client, port, "/hang?h2=reset").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.send_reset(h2::Reason::CANCEL);
    drop(answer);
    gw.client_left_record("/hang?h2=reset", 499);
    let answer = h2_get(&client, port, "/status/201?h2=after").await;
    assert_eq!(answer.status(), 201);
    assert!(answer.headers().contains_key("x-transaction-id"));
    assert!(answer.headers().contains_key("date"));

    // The client closes the whole connection while the backend works.
    let _ = curl(&[
        "-s",
        "--http2-prior-knowledge",
        "--max-time",
        "1",
        &format!("http://127.0.0.1:{port}/hang?h2=leaver"),
    ]);
    let rec = gw.client_left_record("/hang?h2=leaver", 499);
    assert_eq!(rec["properties"]["httpVersion"], "HTTP/2.0");
}

/// An HTTP/2 body whose DATA frames do not add up to its `content-length` is
/// malformed (RFC 9113 §8.1.1): the `h2` crate resets the stream with
/// `PROTOCOL_ERROR`, and the record blames the client's request
/// (`ERRORINFO_INVALID_REQUEST`, with the status already sent), as a broken
/// chunked body does in HTTP/1, not a client that left. Both ways: more bytes
/// than declared, and the stream ended short. The connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_body_that_breaks_its_content_length_is_an_invalid_request() {
    let app = DemoApp::start();
    let port = free_port();
    let gw = Gateway::start_one_core("h2length", &basic_config(port, &[app.addr.to_string()], ""));
    let (client, _) = h2c_client(port).await;
    for (case, declared, rest) in [("longer", "5", &b"3456789"[..]), ("shorter", "10", b"34")] {
        let path = format!("/echo?h2={case}");
        let (answer, mut stream) = h2_post_open(&client, port, &path, declared).await;
        stream
            .send_data(bytes::Bytes::from_static(b"012"), false)
            .expect("first piece");
        // The echo begins before the body is whole.
        let answer = answer.await.expect("the echo's head");
        assert_eq!(answer.status(), 200, "{case}");
        let mut body = answer.into_body();
        let mut echoed = Vec::new();
        while echoed.len() < 3 {
            let piece = body.data().await.expect("more echo").expect("data");
            echoed.extend_from_slice(&piece);
        }
        assert_eq!(echoed, b"012", "{case}");
        stream
            .send_data(bytes::Bytes::copy_from_slice(rest), true)
            .expect("the rest");
        let end = tokio::time::timeout(Duration::from_secs(10), body.data())
            .await
            .expect("the stream ends");
        assert!(
            matches!(&end, Some(Err(e)) if e.reason() == Some(h2::Reason::PROTOCOL_ERROR)),
            "{case}: {end:?}"
        );
        malformed_record(&gw, &path, 200);
    }
    let answer = h2_get(&client, port, "/status/201?h2=after").await;
    assert_eq!(answer.status(), 201);

    // Before the answer: a backend that answers only once the whole body
    // came, and bodies whose DATA frames break their length at once.
    let backend = RawServer::start(Raw::AfterBody);
    let port = free_port();
    let config = kept_config(port, &[backend.addr.to_string()], 1);
    let gw = Gateway::start_one_core("h2length-head", &config);
    let (client, _) = h2c_client(port).await;
    for (case, declared, body) in [
        ("longer", "5", &b"0123456789"[..]),
        ("shorter", "10", b"012"),
    ] {
        let path = format!("/upload?h2={case}");
        let (answer, mut stream) = h2_post_open(&client, port, &path, declared).await;
        stream
            .send_data(bytes::Bytes::copy_from_slice(body), true)
            .expect("body");
        let answer = tokio::time::timeout(Duration::from_secs(10), answer)
            .await
            .expect("the stream ends");
        assert!(
            matches!(&answer, Err(e) if e.reason() == Some(h2::Reason::PROTOCOL_ERROR)),
            "{case}: {answer:?}"
        );
        let rec = malformed_record(&gw, &path, 400);
        assert_eq!(rec["properties"]["sentBytes"], 0, "{case}: {rec:#}");
    }
}

/// A HEAD request over HTTP/2 whose answer is the gateway's own error page
/// gets the page's head and no DATA (RFC 9110 §9.3.2). A DATA frame on a
/// HEAD response is malformed (RFC 9113 §8.1.1), and a client that checks
/// ends the whole connection, its other streams with it: the soak's HTTP/2
/// load found it, 502s to HEAD during backend freezes ending its connections.
/// Over HTTP/1 the page was not sent either, but the record counted its
/// bytes in `sentBytes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_head_request_gets_no_content_in_an_error_answer() {
    let dead = free_port();
    let port = free_port();
    let gw = Gateway::start_one_core(
        "h2head",
        &basic_config(port, &[format!("127.0.0.1:{dead}")], ""),
    );
    let (client, driver) = h2c_client(port).await;
    let req = http::Request::head(format!("http://127.0.0.1:{port}/?h2=head"))
        .body(())
        .expect("request");
    let mut c = client.clone().ready().await.expect("still open");
    let (answer, _) = c.send_request(req, true).expect("send");
    let answer = answer.await.expect("answer");
    assert!(answer.status().is_server_error(), "{answer:?}");
    let mut body = answer.into_body();
    let data = body.data().await;
    assert!(data.is_none(), "no DATA for HEAD: {data:?}");
    let rec = gw.record_where(|r| r["properties"]["originalRequestUriWithArgs"] == "/?h2=head");
    assert_eq!(rec["properties"]["httpMethod"], "HEAD", "{rec:#}");
    assert_ne!(
        rec["properties"]["error_info"], "ERRORINFO_NO_ERROR",
        "{rec:#}"
    );
    // The connection goes on, and a GET still gets the page.
    let answer = h2_get(&client, port, "/?h2=get").await;
    assert!(answer.status().is_server_error(), "{answer:?}");
    let page = answer
        .into_body()
        .data()
        .await
        .expect("a page")
        .expect("data");
    assert!(!page.is_empty());
    assert!(!driver.is_finished(), "the connection is still open");

    // HTTP/1 sends the head only too, and its record counts only that.
    let (text, closed) = raw_exchange(
        local(port),
        b"HEAD /?h1=head HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(closed && text.ends_with("\r\n\r\n"), "{text}");
    let rec = gw.record_where(|r| r["properties"]["originalRequestUriWithArgs"] == "/?h1=head");
    assert_eq!(
        rec["properties"]["sentBytes"],
        text.len() as u64,
        "{text}\n{rec:#}"
    );
}

/// An HTTP/2 field value that starts or ends with a space or a tab makes the
/// request malformed (RFC 9113 §8.2.1): answered 400 and logged
/// `INVALID_REQUEST`, and nothing reaches the backend. Inner whitespace is
/// fine, and the connection goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_field_value_with_edge_whitespace_is_an_invalid_request() {
    let backend = RawServer::start(Raw::Answer(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    ));
    let port = free_port();
    let gw = Gateway::start_one_core("h2ws", &basic_config(port, &[backend.addr.to_string()], ""));
    let (client, driver) = h2c_client(port).await;
    for (i, value) in [" lead", "trail ", "\tlead", "trail\t", " "]
        .iter()
        .enumerate()
    {
        let path = format!("/?ws={i}");
        let mut c = client.clone().ready().await.expect("still open");
        let req = http::Request::get(format!("http://127.0.0.1:{port}{path}"))
            .header("x-padded", *value)
            .body(())
            .expect("request");
        let (answer, _) = c.send_request(req, true).expect("send");
        let answer = answer.await.expect("answer");
        assert_eq!(answer.status(), 400, "{value:?}: {answer:?}");
        let rec = malformed_record(&gw, &path, 400);
        assert_eq!(rec["properties"]["serverRouted"], "-", "{rec:#}");
    }
    assert!(backend.requests().is_empty(), "{:?}", backend.requests());
    // Whitespace inside a value, and an empty value, are fine.
    let mut c = client.clone().ready().await.expect("still open");
    let req = http::Request::get(format!("http://127.0.0.1:{port}/?ws=inner"))
        .header("x-inner", "a \t b")
        .header("x-empty", "")
        .body(())
        .expect("request");
    let (answer, _) = c.send_request(req, true).expect("send");
    let answer = answer.await.expect("answer");
    assert_eq!(answer.status(), 200, "{answer:?}");
    let got = backend.requests();
    assert!(
        got.len() == 1 && got[0].contains("x-inner: a \t b\r\n"),
        "{got:?}"
    );
    assert!(!driver.is_finished(), "the connection is still open");
}

/// An HTTP/2 answer whose backend stalls halfway through its body: a reset
/// from the client ends the stream at once (logged with the status sent and
/// `ERRORINFO_CLIENT_CLOSED_REQUEST`), not when the backend sends again. And a
/// 204 gets no `Content-Length` made up for it (RFC 9110 §8.6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_reset_during_a_stalled_body_and_no_length_for_204() {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let baddr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                if head.contains("/no-content") {
                    let _ = s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
                } else {
                    let _ =
                        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nfirst part");
                }
                // Stall: the rest of the body never comes.
                std::thread::sleep(Duration::from_secs(30));
            });
        }
    });
    let port = free_port();
    let gw = Gateway::start_one_core("h2stall", &basic_config(port, &[baddr.to_string()], ""));
    let (client, _) = h2c_client(port).await;
    let (answer, mut stream) = h2_open(&client, port, "/stall?h2=stalled").await;
    let answer = answer.await.expect("answer");
    assert_eq!(answer.status(), 200);
    let mut body = answer.into_body();
    let first = body.data().await.expect("a first piece").expect("data");
    assert_eq!(&first[..], b"first part");
    let asked = std::time::Instant::now();
    stream.send_reset(h2::Reason::CANCEL);
    gw.client_left_record("/stall?h2=stalled", 200);
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    let answer = h2_get(&client, port, "/no-content").await;
    assert_eq!(answer.status(), 204);
    assert!(
        !answer.headers().contains_key("content-length"),
        "{:?}",
        answer.headers()
    );
}

/// `client_idle_timeout` applies to HTTP/2 connections: one with no open
/// stream for that long gets GOAWAY and is closed; a stream open longer than
/// that is not cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_h2_connections_are_closed_but_busy_ones_are_not() {
    let app = DemoApp::start();
    let port = free_port();
    let _gw = Gateway::start_with(
        "h2idle",
        "client_idle_timeout = 1",
        &basic_config(port, &[app.addr.to_string()], ""),
    );
    let (client, ended) = h2c_client(port).await;
    let answer = h2_get(&client, port, "/slow?ms=2500").await;
    assert_eq!(answer.status(), 200);
    let mut body = answer.into_body();
    let mut text = Vec::new();
    while let Some(piece) = body.data().await {
        text.extend_from_slice(&piece.expect("data"));
    }
    assert_eq!(String::from_utf8_lossy(&text), "slept 2500 ms\n");
    let idle_from = std::time::Instant::now();
    closed_cleanly_when_idle(ended).await;
    assert!(
        idle_from.elapsed() >= Duration::from_millis(800),
        "{:?}",
        idle_from.elapsed()
    );
}

/// An answer whose last part waits in `h2`'s queue for the client's window
/// keeps the connection out of the idle timeout: a client that opens a 1,000-byte
/// window and reads only after three idle timeouts still gets the whole body
/// (its stream's future ended when the last piece was handed to `h2`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_h2_answer_data_is_not_cut_by_the_idle_timeout() {
    let app = DemoApp::start();
    let port = free_port();
    let _gw = Gateway::start_with(
        "h2queued",
        "client_idle_timeout = 1",
        &basic_config(port, &[app.addr.to_string()], ""),
    );
    let (client, ended) =
        h2c_client_with(port, h2::client::Builder::new().initial_window_size(1000)).await;
    let answer = h2_get(&client, port, "/bytes?n=25000").await;
    assert_eq!(answer.status(), 200);
    // Three idle timeouts with 24,000 bytes of the answer still to come.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut body = answer.into_body();
    let mut got = 0;
    while let Some(piece) = body.data().await {
        let piece = piece.expect("the whole answer, not a closed connection");
        got += piece.len();
        let _ = body.flow_control().release_capacity(piece.len());
    }
    assert_eq!(got, 25_000);
    // Once it is sent, the connection is idle and closed as usual.
    closed_cleanly_when_idle(ended).await;
}

/// `client_send_timeout` on HTTP/2: a stream whose answer waits that long for
/// a window the client never opens is reset (CANCEL) and logged with the status
/// sent and `CLIENT_CLOSED_REQUEST`, and the connection goes on serving; an
/// answer whose last part sits in `h2`'s queue for a client that takes nothing
/// more ends the connection after that long (the idle timeout would wait for
/// the queue: `queued_h2_answer_data_is_not_cut_by_the_idle_timeout`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_answers_the_client_takes_nothing_of_are_given_up_after_the_send_timeout() {
    let app = DemoApp::start();
    let port = free_port();
    let gw = Gateway::start_with(
        "h2sendtimeout",
        "client_send_timeout = 1",
        &basic_config(port, &[app.addr.to_string()], ""),
    );
    let small_window = || {
        let mut b = h2::client::Builder::new();
        b.initial_window_size(1000);
        b
    };
    let (client, _driver) = h2c_client_with(port, &small_window()).await;
    // Pieces of 64 KiB from the backend: the second waits for window.
    let answer = h2_get(&client, port, "/bytes?n=200000").await;
    assert_eq!(answer.status(), 200);
    let mut body = answer.into_body();
    let first = body.data().await.expect("a first piece").expect("data");
    assert_eq!(first.len(), 1000);
    let waited = std::time::Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(10), body.data())
        .await
        .expect("the stream ends within 10 s");
    let err = match end {
        Some(Err(e)) => e,
        other => panic!("not a reset: {other:?}"),
    };
    assert_eq!(err.reason(), Some(h2::Reason::CANCEL), "{err:?}");
    assert!(
        waited.elapsed() >= Duration::from_millis(900),
        "{:?}",
        waited.elapsed()
    );
    gw.client_left_record("/bytes?n=200000", 200);
    let answer = h2_get(&client, port, "/status/204").await;
    assert_eq!(answer.status(), 204);

    // The whole answer handed to `h2` at once, 24,000 bytes of it queued;
    // the client PINGs every 200 ms meanwhile: the 17-byte answers are not
    // progress of the queue.
    let tcp = tokio::net::TcpStream::connect(local(port))
        .await
        .expect("connect");
    let (client, mut conn) = small_window()
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .expect("h2 handshake");
    let mut pings = conn.ping_pong().expect("ping_pong");
    let ended = tokio::spawn(conn);
    let answer = h2_get(&client, port, "/bytes?n=25000").await;
    assert_eq!(answer.status(), 200);
    let waited = std::time::Instant::now();
    let pinger = tokio::spawn(async move {
        let mut answered = 0;
        while pings.ping(h2::Ping::opaque()).await.is_ok() {
            answered += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        answered
    });
    let end = tokio::time::timeout(Duration::from_secs(10), ended)
        .await
        .expect("the connection ends within 10 s");
    assert!(
        waited.elapsed() >= Duration::from_millis(900),
        "{:?}",
        waited.elapsed()
    );
    let answered = pinger.await.expect("pinger");
    assert!(answered >= 3, "{answered} PINGs answered");
    drop((end, answer));
}

/// An HTTP/2 client that opens every window wide and then reads nothing (the
/// socket fills): the stream's pieces wait for room in `h2`'s send buffer, and
/// after `client_send_timeout` the stream is given up and logged, which ends
/// its backend request; the connection then closes. A raw client, as an `h2`
/// client always reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_client_that_reads_nothing_is_given_up_after_the_send_timeout() {
    use std::io::Write;
    const PATH: &str = "/bytes?n=67108864";
    let app = DemoApp::start();
    let port = free_port();
    let gw = Gateway::start_with(
        "h2noread",
        "client_send_timeout = 1\nclient_idle_timeout = 2",
        &basic_config(port, &[app.addr.to_string()], ""),
    );
    let mut s = std::net::TcpStream::connect(local(port)).expect("connect");
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    };
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // SETTINGS: INITIAL_WINDOW_SIZE 2^31-1; the connection's window as wide.
    out.extend(frame(0x4, 0, 0, &[0, 4, 0x7f, 0xff, 0xff, 0xff]));
    out.extend(frame(0x8, 0, 0, &(0x7fff_ffffu32 - 65_535).to_be_bytes()));
    // HEADERS, END_STREAM | END_HEADERS: GET, http, :authority a, :path PATH
    // (HPACK: indexed 2 and 6, literals with indexed names 1 and 4).
    let mut block = vec![0x82, 0x86, 0x41, 1, b'a', 0x44, PATH.len() as u8];
    block.extend_from_slice(PATH.as_bytes());
    out.extend(frame(0x1, 0x5, 1, &block));
    s.write_all(&out).expect("write");
    let asked = std::time::Instant::now();
    let rec = gw.client_left_record(PATH, 200);
    assert!(
        asked.elapsed() >= Duration::from_millis(900),
        "{:?}",
        asked.elapsed()
    );
    let sent = rec["properties"]["sentBytes"].as_u64().expect("sentBytes");
    assert!(sent < 67_108_864, "{sent}");
    // What was on the way, then the end of the connection.
    read_until_closed(&mut s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_to_the_backend_with_a_trusted_root() {
    let dir = temp_dir("tlsbackend");
    let (ca, cert, key) = test_pki(&dir);
    std::fs::write(dir.join("index.html"), "secure hello\n").expect("write");
    let bport = free_port();
    let script = format!(
        "import http.server, ssl\n\
         h = http.server.SimpleHTTPRequestHandler\n\
         s = http.server.HTTPServer(('127.0.0.1', {bport}), lambda *a, **k: h(*a, directory='{d}', **k))\n\
         c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
         c.load_cert_chain('{cert}', '{key}')\n\
         s.socket = c.wrap_socket(s.socket, server_side=True)\n\
         s.serve_forever()\n",
        d = dir.display(),
        cert = cert.display(),
        key = key.display()
    );
    let mut py = Command::new("python3")
        .args(["-c", &script])
        .spawn()
        .expect("python");
    wait_port(local(bport));
    let port = free_port();
    let settings = format!(
        "protocol = \"https\"\nport = {bport}\nhost_name = \"localhost\"\ntrusted_root_certificates = [\"{}\"]",
        ca.display()
    );
    let gw = Gateway::start_one_core(
        "tlsback",
        &basic_config(port, &["127.0.0.1".to_string()], &settings),
    );
    let r = get(local(port), "/index.html").await;
    let _ = py.kill();
    let _ = py.wait();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "secure hello\n");
    let rec = gw.record(&r.txid());
    assert_eq!(
        rec["properties"]["serverRouted"],
        format!("127.0.0.1:{bport}")
    );
}

/// One HTTP/1.1 request over a new TLS connection made with `client`; returns
/// how its handshake went. The answer is read to its end, which also reads
/// the session tickets the gateway sent after the handshake.
async fn tls_get(
    client: &std::sync::Arc<rustls::ClientConfig>,
    port: u16,
) -> Option<rustls::HandshakeKind> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(client.clone())
        .connect(name, tcp)
        .await
        .expect("handshake");
    tls.write_all(b"GET /status/200 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    tls.get_ref().1.handshake_kind()
}

/// Sessions resume with stateless tickets: a client that got its tickets
/// before 300 other clients connected (600 more sessions than the 256
/// rustls's default server cache would have kept) still resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sessions_resume_after_many_other_clients() {
    let app = DemoApp::start();
    let dir = temp_dir("certs-resume");
    let (ca, cert, key) = test_pki(&dir);
    let port = free_port();
    let config = https_config(port, &app, &cert, &key);
    let _gw = Gateway::start_one_core("https-resume", &config);
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    for c in rustls_pki_types::CertificateDer::pem_file_iter(&ca).expect("ca") {
        roots.add(c.expect("pem")).expect("root");
    }
    let client = || {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut c = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        std::sync::Arc::new(c)
    };
    let first = client();
    assert_eq!(
        tls_get(&first, port).await,
        Some(rustls::HandshakeKind::Full)
    );
    for _ in 0..300 {
        tls_get(&client(), port).await;
    }
    assert_eq!(
        tls_get(&first, port).await,
        Some(rustls::HandshakeKind::Resumed)
    );
}

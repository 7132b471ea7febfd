use super::*;
use proptest::prelude::*;

const MAX: usize = 8 * 1024;

fn plain(head: &[u8]) -> (ApiRequest, usize) {
    match parse(head, MAX) {
        Head::Plain { req, len } => (req, len),
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(head)),
    }
}

fn other(head: &[u8]) {
    assert!(
        matches!(parse(head, MAX), Head::Other),
        "{:?}",
        String::from_utf8_lossy(head)
    );
}

/// The fields of a request the API acts on, comparable.
fn fields(r: &ApiRequest) -> String {
    let bearer = r
        .bearer
        .as_ref()
        .map(|b| b.as_ref().map(crate::identity::TokenDigest::to_hex));
    format!(
        "{} {} {bearer:?} raw={} create_only={} query={:?} fresh={} body={}",
        r.method,
        r.path,
        r.wants_raw,
        r.create_only,
        r.query,
        r.fresh,
        r.body.is_some()
    )
}

#[test]
fn a_plain_get_is_read_with_its_fields_and_length() {
    let head = b"GET /v1/secrets/acme/x HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer t0k\r\nAccept: application/octet-stream\r\ncache-control: max-age=0, No-Cache\r\n\r\nGET /next";
    let (req, len) = plain(head);
    assert_eq!(len, head.len() - b"GET /next".len());
    assert_eq!(req.method, http::Method::GET);
    assert_eq!(req.path, "/v1/secrets/acme/x");
    assert!(req.wants_raw && req.fresh && !req.create_only);
    assert!(req.query.is_none() && req.body.is_none());
    let digest = crate::identity::TokenDigest::of_token(b"t0k").to_hex();
    assert_eq!(
        req.bearer.unwrap().unwrap().to_hex(),
        digest,
        "the bearer token is hashed at once"
    );
}

#[test]
fn the_first_of_a_repeated_header_counts_as_with_hyper() {
    let (req, _) = plain(
        b"GET /healthz HTTP/1.1\r\naccept: text/plain\r\nAccept: application/octet-stream\r\nauthorization: Basic x\r\nauthorization: Bearer y\r\n\r\n",
    );
    assert!(!req.wants_raw);
    assert!(req.bearer.unwrap().is_err());
}

#[test]
fn an_incomplete_head_waits_for_more() {
    assert!(matches!(parse(b"", MAX), Head::Partial));
    assert!(matches!(
        parse(b"GET /healthz HTTP/1.1\r\nHo", MAX),
        Head::Partial
    ));
}

#[test]
fn anything_but_a_plain_get_is_hyper_s() {
    for head in [
        &b"POST /v1/secrets/a HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}"[..],
        b"PUT /v1/secrets/a HTTP/1.1\r\n\r\n",
        b"HEAD /healthz HTTP/1.1\r\n\r\n",
        b"get /healthz HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.0\r\n\r\n",
        b"GET /v1/secrets/a?version=1 HTTP/1.1\r\n\r\n",
        b"GET http://b/healthz HTTP/1.1\r\n\r\n",
        b"GET * HTTP/1.1\r\n\r\n",
        b"GET /a#frag HTTP/1.1\r\n\r\n",
        b"GET /a\"b HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nconnection: close\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nbad header\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n x: folded\r\n\r\n",
    ] {
        other(head);
    }
}

#[test]
fn a_head_at_the_size_limit_or_with_too_many_headers_is_hyper_s() {
    let mut big = b"GET /healthz HTTP/1.1\r\nx: ".to_vec();
    big.resize(MAX, b'a');
    assert!(
        matches!(parse(&big, MAX), Head::Other),
        "partial, at the limit"
    );
    big.extend_from_slice(b"\r\n\r\n");
    assert!(matches!(parse(&big, MAX), Head::Other), "complete, over it");
    let mut many = b"GET /healthz HTTP/1.1\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend_from_slice(format!("x{i}: 1\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert!(matches!(parse(&many, 1 << 20), Head::Other));
}

/// What hyper's server makes of `head` (`ApiRequest::from` of the first
/// request it hands over), if it hands one over.
fn hyper_reads(head: &[u8]) -> Option<ApiRequest> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let seen = Arc::new(std::sync::Mutex::new(None));
        let keep = Arc::clone(&seen);
        let service = hyper::service::service_fn(move |req| {
            let mut slot = keep.lock().unwrap();
            if slot.is_none() {
                *slot = Some(ApiRequest::from(req));
            }
            async {
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<
                    bytes::Bytes,
                >::new()))
            }
        });
        client.write_all(head).await.unwrap();
        client.shutdown().await.unwrap();
        let conn = hyper::server::conn::http1::Builder::new()
            .max_header_size(MAX)
            .serve_connection(hyper_util::rt::TokioIo::new(server), service);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn).await;
        seen.lock().unwrap().take()
    })
}

fn header_line() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("Authorization".to_owned()),
        Just("authorization".to_owned()),
        Just("Accept".to_owned()),
        Just("If-None-Match".to_owned()),
        Just("Cache-Control".to_owned()),
        Just("cache-control".to_owned()),
        Just("Host".to_owned()),
        Just("Content-Length".to_owned()),
        Just("Transfer-Encoding".to_owned()),
        Just("Connection".to_owned()),
        Just("X-Other".to_owned()),
        "[A-Za-z-]{1,12}",
    ];
    let value = prop_oneof![
        Just("Bearer tok-1".to_owned()),
        Just("bearer tok-2".to_owned()),
        Just("Basic abc".to_owned()),
        Just("application/octet-stream".to_owned()),
        Just("text/html, application/octet-stream;q=0.5".to_owned()),
        Just("*".to_owned()),
        Just(" * ".to_owned()),
        Just("no-cache".to_owned()),
        Just("max-age=0,NO-CACHE".to_owned()),
        Just("0".to_owned()),
        Just("close".to_owned()),
        "[ -~]{0,24}",
    ];
    (name, value).prop_map(|(n, v)| format!("{n}:{v}\r\n"))
}

fn head() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![Just("GET"), Just("GET"), Just("PUT"), Just("HEAD")];
    let path = prop_oneof![
        Just("/healthz".to_owned()),
        Just("/v1/secrets/acme/tasks/t-42/db".to_owned()),
        Just("/v1/secrets/a?x=1".to_owned()),
        "/[a-zA-Z0-9%/._~!$&'()*+,;=:@-]{0,30}",
        "/[ -~]{0,12}",
    ];
    let version = prop_oneof![Just("HTTP/1.1"), Just("HTTP/1.1"), Just("HTTP/1.0")];
    (
        method,
        path,
        version,
        proptest::collection::vec(header_line(), 0..6),
    )
        .prop_map(|(m, p, v, hs)| format!("{m} {p} {v}\r\n{}\r\n", hs.concat()).into_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// SECURITY: the lane serves a request only where hyper would have
    /// read the same bodiless request with the same fields, and it reads
    /// exactly the head's bytes.
    #[test]
    fn a_head_the_lane_takes_is_what_hyper_reads(head in head()) {
        if let Head::Plain { req, len } = parse(&head, MAX) {
            prop_assert_eq!(len, head.len());
            let theirs = hyper_reads(&head);
            prop_assert!(theirs.is_some(), "hyper refused {:?}", String::from_utf8_lossy(&head));
            prop_assert_eq!(fields(&req), fields(&theirs.unwrap()));
        }
    }
}

#[test]
fn the_generated_heads_include_plain_gets_and_others() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut plain, mut others) = (0, 0);
    for _ in 0..256 {
        let head = head().new_tree(&mut runner).unwrap().current();
        match parse(&head, MAX) {
            Head::Plain { .. } => plain += 1,
            _ => others += 1,
        }
    }
    assert!(plain > 25 && others > 40, "{plain} plain, {others} other");
}

#[tokio::test]
async fn the_answer_is_written_as_hyper_frames_it() {
    let (mut client, mut server) = tokio::io::duplex(64 * 1024);
    let answer = Answer::new(
        http::StatusCode::OK,
        crate::api::ZeroizingBuf::public(b"{\"ok\":true}".to_vec()),
        "application/json",
    );
    let mut head = Vec::new();
    assert!(write_answer(&mut server, &mut head, answer).await.unwrap());
    drop(server);
    let mut out = Vec::new();
    client.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    assert_eq!(lines.next(), Some("HTTP/1.1 200 OK"));
    let rest: Vec<&str> = lines.collect();
    assert!(rest.contains(&"content-type: application/json"), "{rest:?}");
    assert!(rest.contains(&"content-length: 11"), "{rest:?}");
    assert!(
        rest.iter()
            .any(|l| l.starts_with("date: ") && l.ends_with(" GMT")),
        "{rest:?}"
    );
    assert_eq!(body, "{\"ok\":true}");
}

#[tokio::test]
async fn an_answer_that_closes_says_so() {
    let (_client, mut server) = tokio::io::duplex(64 * 1024);
    let mut answer = Answer::new(
        http::StatusCode::OK,
        crate::api::ZeroizingBuf::default(),
        "application/json",
    );
    answer.set_close();
    assert!(
        !write_answer(&mut server, &mut Vec::new(), answer)
            .await
            .unwrap()
    );
}

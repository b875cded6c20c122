//! The QA override token through real Envoy 1.40: whatever the request
//! (override accepted, refused, token alone, sent twice, any letter case),
//! the token header stops at the gateway filter. No upstream sees it, neither
//! the cohort's version nor the shadow's mirrored copy; Envoy's access log
//! (Istio's default format plus the override headers) and its stats never
//! hold it. A listener without the filter, logging the same way, shows that
//! the log and the upstream would have it otherwise.
//!
//! Needs `make wasm` and Envoy from `make tools`.

use std::time::Duration;

use model_service::dataset::hex;
use sha2::{Digest, Sha256};
// The gateway config sets no header names: the filter's defaults apply.
use sms_checker_filter::config::{
    DEFAULT_OVERRIDE_HEADER as OVERRIDE_HEADER, DEFAULT_OVERRIDE_TOKEN_HEADER as TOKEN_HEADER,
};
use sms_checker_tests::envoy::{
    AccessLog, Bootstrap, Envoy, ListenerSpec, Route, gateway_listener, metric,
};
use sms_checker_tests::http::{Client, Upstream, http_get};
use sms_checker_tests::{free_port, wait_for};

const TOKEN: &str = "qa-token-7f3c9a1e5b2d";
const WRONG_TOKEN: &str = "not-the-token-4d2e8b6a";

/// Istio's default text access log format (meshConfig.accessLogFile), with
/// the cohort and the two override headers added as an operator might.
const ACCESS_LOG_FORMAT: &str = concat!(
    "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" ",
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% ",
    "\"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% ",
    "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" ",
    "\"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% ",
    "%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% ",
    "%REQUESTED_SERVER_NAME% %ROUTE_NAME% ",
    "cohort=%REQ(X-EXPERIMENT-COHORT)% override=%REQ(X-EXPERIMENT-OVERRIDE)% ",
    "token=%REQ(X-EXPERIMENT-OVERRIDE-TOKEN)%\n",
);

fn gateway_config() -> String {
    let sha = hex(&Sha256::digest(TOKEN.as_bytes()));
    // Everyone stable unless an override says otherwise.
    format!(
        r#"{{"role":"gateway","cohorts":[{{"name":"stable","weight":100}},{{"name":"canary","weight":0}}],"override":{{"tokenSha256":"{sha}"}}}}"#
    )
}

/// A request: what it tries, its headers, and the upstream that must serve it.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

fn upstream(name: &str) -> Upstream {
    Upstream::start(name, &[("x-model-version", name)])
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn the_override_token_never_leaves_the_gateway() {
    let dir = tempfile::Builder::new()
        .prefix("envoy-token-")
        .tempdir()
        .expect("temp dir");
    let (v1, v2, v3, direct) = (
        upstream("v1"),
        upstream("v2"),
        upstream("v3"),
        upstream("direct"),
    );
    let (gateway_port, plain_port) = (free_port(), free_port());
    let mut bootstrap = Bootstrap::new();
    bootstrap.clusters = vec![
        ("v1".into(), v1.port),
        ("v2".into(), v2.port),
        ("v3".into(), v3.port),
        ("direct".into(), direct.port),
    ];
    // The gateway as Istio builds it from the chart: cohort routes, the
    // split, every request mirrored to the shadow.
    bootstrap.listeners.push(gateway_listener(
        gateway_port,
        &gateway_config(),
        &[("v1", 100)],
    ));
    // The control: the same log, no filter.
    bootstrap.listeners.push(ListenerSpec {
        name: "plain".into(),
        port: plain_port,
        wasm: None,
        routes: vec![Route::Weighted(vec![("direct".into(), 100)])],
        mirror_cluster: None,
    });
    let access_log = AccessLog {
        dir: dir.path().to_path_buf(),
        format: ACCESS_LOG_FORMAT.into(),
    };
    bootstrap.access_log = Some(access_log.clone());
    let envoy = Envoy::start_with_args(
        "gateway",
        dir.path(),
        &bootstrap,
        &["--concurrency", "2", "--file-flush-interval-msec", "100"],
    );

    let mut client = Client::new(gateway_port);
    let cases: &[Case] = &[
        (
            "accepted override",
            &[(OVERRIDE_HEADER, "canary"), (TOKEN_HEADER, TOKEN)],
            "v2",
        ),
        (
            "refused override",
            &[(OVERRIDE_HEADER, "canary"), (TOKEN_HEADER, WRONG_TOKEN)],
            "v1",
        ),
        ("token without an override", &[(TOKEN_HEADER, TOKEN)], "v1"),
        (
            "token sent twice",
            &[
                (OVERRIDE_HEADER, "canary"),
                (TOKEN_HEADER, WRONG_TOKEN),
                (TOKEN_HEADER, TOKEN),
            ],
            "v1",
        ),
        (
            "header name in another case",
            &[
                ("X-Experiment-Override", "canary"),
                ("X-Experiment-Override-Token", TOKEN),
            ],
            "v2",
        ),
        (
            "override of an unknown cohort",
            &[(OVERRIDE_HEADER, "beta"), (TOKEN_HEADER, TOKEN)],
            "v1",
        ),
    ];
    for (what, headers, served_by) in cases {
        let response = client
            .get("/sms", headers)
            .unwrap_or_else(|err| panic!("{what}: {err}"));
        assert_eq!(response.status, 200, "{what}: {response:?}");
        assert_eq!(
            response.header("x-upstream"),
            Some(*served_by),
            "{what}: {response:?}"
        );
        for (name, value) in &response.headers {
            assert!(
                !value.contains(TOKEN) && !value.contains(WRONG_TOKEN),
                "{what}: the response echoes a token in {name}: {value}"
            );
        }
    }
    let sent = cases.len();

    // Every live request was mirrored: the shadow's copies are checked too.
    wait_for("the mirrored copies", Duration::from_secs(10), || {
        (v3.count() >= sent).then_some(())
    });
    assert_eq!(v1.count() + v2.count(), sent);
    assert_eq!(v2.count(), 2, "the two accepted overrides went to canary");
    for upstream in [&v1, &v2, &v3] {
        for request in upstream.requests() {
            assert_eq!(
                request.header(TOKEN_HEADER),
                None,
                "{}: {request:?}",
                upstream.name
            );
            assert_eq!(
                request.header(OVERRIDE_HEADER),
                None,
                "{}: {request:?}",
                upstream.name
            );
            for (name, value) in request
                .headers
                .iter()
                .chain([("path".to_string(), request.path.clone())].iter())
            {
                assert!(
                    !value.contains(TOKEN) && !value.contains(WRONG_TOKEN),
                    "{} received a token in {name}: {value}",
                    upstream.name
                );
            }
        }
    }

    // The access log has a line per request, each without the token.
    let gateway_log = access_log.path("gateway");
    let logged = wait_for("the gateway's access log", Duration::from_secs(10), || {
        let logged = lines(&gateway_log);
        (logged.len() >= sent).then_some(logged)
    });
    assert_eq!(logged.len(), sent, "{logged:#?}");
    for line in &logged {
        assert!(line.contains("\"GET /sms HTTP/1.1\" 200"), "{line}");
        assert!(line.ends_with("override=- token=-"), "{line}");
        assert!(
            !line.contains(TOKEN) && !line.contains(WRONG_TOKEN),
            "token in the access log: {line}"
        );
    }
    assert_eq!(
        logged
            .iter()
            .filter(|l| l.contains("cohort=canary"))
            .count(),
        2,
        "{logged:#?}"
    );

    // The control: without the filter the same log and upstream have it.
    let response = Client::new(plain_port)
        .get("/sms", &[(TOKEN_HEADER, TOKEN)])
        .expect("GET through the plain listener");
    assert_eq!(response.status, 200);
    assert_eq!(direct.requests()[0].header(TOKEN_HEADER), Some(TOKEN));
    let plain_log = access_log.path("plain");
    let control = wait_for(
        "the plain listener's access log",
        Duration::from_secs(10),
        || lines(&plain_log).into_iter().next(),
    );
    assert!(control.ends_with(&format!("token={TOKEN}")), "{control}");

    // Metrics: the overrides are counted, the token is in no stat.
    let text = wait_for("the override counters", Duration::from_secs(15), || {
        let text = envoy.prometheus();
        let count = |outcome| metric(&text, "sms_cohort_overrides_total", &[("outcome", outcome)]);
        (count("accepted") == Some(2.0) && count("rejected") == Some(3.0)).then_some(text)
    });
    let stats = http_get(envoy.admin_port, "/stats").expect("GET /stats");
    for (what, body) in [("/stats/prometheus", text), ("/stats", stats.body_text())] {
        assert!(
            !body.contains(TOKEN) && !body.contains(WRONG_TOKEN),
            "token in {what}"
        );
    }
    let log = envoy.process.log();
    assert!(
        !log.contains(TOKEN) && !log.contains(WRONG_TOKEN),
        "token in Envoy's log:\n{log}"
    );
}

//! The cohort filter inside real Envoy 1.40, loaded the way Istio loads a
//! WasmPlugin: (a) routing follows the assigned cohort, (b) users stick to it
//! across requests and restarts, (c) the split holds over 10,000 users,
//! (d) forged cohort headers are overwritten, (e) metrics reach
//! `/stats/prometheus` as labelled series, (f) bad configs are refused with
//! the field named, (g) mirrored copies carry the cohort to the shadow.
//! Also: a stream reset before any response is still counted, and the
//! module exports only the callbacks it implements (Envoy calls every one
//! that is exported).
//!
//! Needs `make wasm` (a prerequisite of `make test`) and Envoy from
//! `make tools`.

use std::collections::BTreeMap;
use std::time::Duration;

use model_service::dataset::hex;
use sha2::{Digest, Sha256};
// The configs here leave the header at the filter's default.
use sms_checker_filter::config::DEFAULT_COHORT_HEADER as COHORT_HEADER;
use sms_checker_tests::envoy::{
    Bootstrap, Envoy, ListenerSpec, Route, filter_wasm, gateway_listener, metric,
};
use sms_checker_tests::http::{Client, Response, Upstream};
use sms_checker_tests::{free_port, wait_for};

const COOKIE: &str = "sms-checker-uid";
const OVERRIDE_TOKEN: &str = "qa-secret-token";

/// The gateway's default route: Istio's per-request split, reached only
/// without the filter.
const ISTIO_SPLIT: [(&str, u32); 2] = [("v1", 50), ("v2", 50)];

fn gateway_config(stable: u32, canary: u32, extra: &str) -> String {
    format!(
        r#"{{"role":"gateway","cohorts":[{{"name":"stable","weight":{stable}}},{{"name":"canary","weight":{canary}}}]{extra}}}"#
    )
}

fn sidecar_config(extra: &str) -> String {
    format!(
        r#"{{"role":"sidecar","cohorts":[{{"name":"stable","weight":90}},{{"name":"canary","weight":10}}]{extra}}}"#
    )
}

fn override_extra() -> String {
    let sha = hex(&Sha256::digest(OVERRIDE_TOKEN.as_bytes()));
    format!(r#","override":{{"tokenSha256":"{sha}"}}"#)
}

/// Upstreams v1 (stable), v2 (canary), v3 (shadow) behind a gateway Envoy.
struct Gateway {
    v1: Upstream,
    v2: Upstream,
    v3: Upstream,
    bootstrap: Bootstrap,
    port: u16,
}

fn upstream(version: &str, prediction: &str) -> Upstream {
    Upstream::start(
        version,
        &[
            ("x-model-version", version),
            ("x-model-prediction", prediction),
        ],
    )
}

impl Gateway {
    fn new(plugin_config: &str) -> Gateway {
        let (v1, v2, v3) = (
            upstream("v1", "ham"),
            upstream("v2", "spam"),
            upstream("v3", "spam"),
        );
        let port = free_port();
        let mut bootstrap = Bootstrap::new();
        bootstrap.clusters = vec![
            ("v1".into(), v1.port),
            ("v2".into(), v2.port),
            ("v3".into(), v3.port),
        ];
        bootstrap
            .listeners
            .push(gateway_listener(port, plugin_config, &ISTIO_SPLIT));
        Gateway {
            v1,
            v2,
            v3,
            bootstrap,
            port,
        }
    }
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("envoy-filter-")
        .tempdir()
        .expect("temp dir")
}

fn get(client: &mut Client, headers: &[(&str, &str)]) -> Response {
    let response = client
        .get("/sms", headers)
        .unwrap_or_else(|err| panic!("GET /sms through the gateway: {err}"));
    assert_eq!(response.status, 200, "{response:?}");
    response
}

fn cohort_of(response: &Response) -> &str {
    response
        .header(COHORT_HEADER)
        .unwrap_or_else(|| panic!("no {COHORT_HEADER} echoed in {response:?}"))
}

/// The upstream that served `response` (`x-upstream`).
fn served_by(response: &Response) -> &str {
    response
        .header("x-upstream")
        .unwrap_or_else(|| panic!("no x-upstream in {response:?}"))
}

fn expected_upstream(cohort: &str) -> &'static str {
    match cohort {
        "stable" => "v1",
        "canary" => "v2",
        other => panic!("unexpected cohort {other:?}"),
    }
}

#[test]
fn a_route_follows_the_assigned_cohort() {
    let dir = temp_dir();
    let gw = Gateway::new(&gateway_config(50, 50, ""));
    let _envoy = Envoy::start("gateway", dir.path(), &gw.bootstrap);
    let mut client = Client::new(gw.port);
    let mut seen = BTreeMap::new();
    for _ in 0..200 {
        let response = get(&mut client, &[]);
        let cohort = cohort_of(&response).to_string();
        assert_eq!(served_by(&response), expected_upstream(&cohort));
        *seen.entry(cohort).or_insert(0) += 1;
    }
    assert_eq!(
        seen.len(),
        2,
        "both cohorts should occur at 50/50: {seen:?}"
    );
    // Each upstream saw exactly one cohort header, with its own cohort.
    for (upstream, cohort) in [(&gw.v1, "stable"), (&gw.v2, "canary")] {
        for request in upstream.requests() {
            assert_eq!(request.header_count(COHORT_HEADER), 1, "{request:?}");
            assert_eq!(request.header(COHORT_HEADER), Some(cohort));
        }
    }
    assert_eq!(gw.v1.count() + gw.v2.count(), 200);
    wait_for("the mirrored copies at v3", Duration::from_secs(10), || {
        (gw.v3.count() == 200).then_some(())
    });
}

#[test]
fn b_users_keep_their_cohort_over_requests_and_restarts() {
    let dir = temp_dir();
    let gw = Gateway::new(&gateway_config(50, 50, ""));
    let mut envoy = Envoy::start("gateway", dir.path(), &gw.bootstrap);
    let mut client = Client::new(gw.port);
    let mut users = Vec::new();
    while users.len() < 6 || !users.iter().any(|(_, c): &(String, String)| c == "canary") {
        assert!(users.len() < 100, "no canary user among {users:?}");
        let first = get(&mut client, &[]);
        let id = first
            .set_cookie(COOKIE)
            .unwrap_or_else(|| panic!("a new user gets a cookie: {first:?}"));
        let set_cookie = first.headers_named("set-cookie").join("\n");
        for attribute in ["Path=/", "HttpOnly", "SameSite=Lax", "Max-Age=2592000"] {
            assert!(set_cookie.contains(attribute), "{set_cookie}");
        }
        users.push((id, cohort_of(&first).to_string()));
    }
    let check = |client: &mut Client, rounds: usize| {
        for (id, cohort) in &users {
            let cookie = format!("theme=dark; {COOKIE}={id}");
            for _ in 0..rounds {
                let response = get(client, &[("cookie", &cookie)]);
                assert_eq!(cohort_of(&response), cohort, "user {id}");
                assert_eq!(served_by(&response), expected_upstream(cohort));
                assert!(
                    response.set_cookie(COOKIE).is_none(),
                    "a returning user keeps its cookie: {response:?}"
                );
            }
        }
    };
    check(&mut client, 100);

    // A new Envoy process (a gateway restart or another replica).
    envoy.process.stop();
    drop(envoy);
    let _envoy = Envoy::start("gateway-restarted", dir.path(), &gw.bootstrap);
    let mut client = Client::new(gw.port);
    check(&mut client, 10);
}

/// Sends `users` cookie-less requests from 4 keep-alive connections and
/// returns the share of each cohort, in percent.
fn split(port: u16, users: usize) -> BTreeMap<String, f64> {
    let threads = 4;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let mut client = Client::new(port);
                let mut counts: BTreeMap<String, usize> = BTreeMap::new();
                for _ in (t..users).step_by(threads) {
                    let response = get(&mut client, &[]);
                    assert!(response.set_cookie(COOKIE).is_some());
                    *counts.entry(cohort_of(&response).to_string()).or_default() += 1;
                }
                counts
            })
        })
        .collect();
    let mut total: BTreeMap<String, usize> = BTreeMap::new();
    for handle in handles {
        for (cohort, n) in handle.join().expect("client thread") {
            *total.entry(cohort).or_default() += n;
        }
    }
    assert_eq!(total.values().sum::<usize>(), users);
    total
        .into_iter()
        .map(|(cohort, n)| (cohort, 100.0 * n as f64 / users as f64))
        .collect()
}

#[test]
fn c_ten_thousand_new_users_split_by_the_weights() {
    for (stable, canary) in [(90, 10), (95, 5)] {
        let dir = temp_dir();
        let gw = Gateway::new(&gateway_config(stable, canary, ""));
        let envoy = Envoy::start("gateway", dir.path(), &gw.bootstrap);
        let shares = split(gw.port, 10_000);
        for (cohort, weight) in [("stable", stable), ("canary", canary)] {
            let share = shares.get(cohort).copied().unwrap_or(0.0);
            assert!(
                (share - f64::from(weight)).abs() <= 1.5,
                "{cohort}: {share:.2}% for weight {weight} ({shares:?})"
            );
        }
        // Routing agreed with the assignment for every request. Counters
        // reach Envoy at the filter's next flush (every second).
        let expected = (Some(gw.v1.count() as f64), Some(gw.v2.count() as f64));
        wait_for("the new-user counters", Duration::from_secs(10), || {
            let text = envoy.prometheus();
            let new_users = |cohort| {
                metric(
                    &text,
                    "sms_cohort_users_total",
                    &[("cohort", cohort), ("user", "new")],
                )
            };
            ((new_users("stable"), new_users("canary")) == expected).then_some(())
        });
    }
}

#[test]
fn d_a_forged_cohort_header_is_overwritten() {
    forged_cohort_headers_are_overwritten(&override_extra());
}

/// The same with the explicit `clear_route_cache` foreign-function call on
/// (Envoy 1.40 has it, and also clears the route cache on its own).
#[test]
fn d_a_forged_cohort_header_is_overwritten_with_clear_route_cache() {
    forged_cohort_headers_are_overwritten(&format!(
        "{},\"clearRouteCache\":true",
        override_extra()
    ));
}

fn forged_cohort_headers_are_overwritten(extra: &str) {
    let dir = temp_dir();
    let gw = Gateway::new(&gateway_config(100, 0, extra));
    let _envoy = Envoy::start("gateway", dir.path(), &gw.bootstrap);
    let mut client = Client::new(gw.port);
    for forged in [
        vec![(COHORT_HEADER, "canary")],
        vec![(COHORT_HEADER, "canary"), (COHORT_HEADER, "canary")],
        vec![("X-Experiment-Cohort", "canary")],
        // A wrong QA token does not open the door either.
        vec![
            ("x-experiment-override", "canary"),
            ("x-experiment-override-token", "guess"),
        ],
    ] {
        for _ in 0..20 {
            let response = get(&mut client, &forged);
            assert_eq!(cohort_of(&response), "stable", "{forged:?}");
            assert_eq!(served_by(&response), "v1", "{forged:?}");
        }
    }
    assert_eq!(gw.v2.count(), 0, "canary has weight 0 and must see nothing");
    for request in gw.v1.requests() {
        assert_eq!(request.header_count(COHORT_HEADER), 1, "{request:?}");
        assert_eq!(request.header(COHORT_HEADER), Some("stable"));
        // The override headers, token included, stop at the gateway.
        assert_eq!(request.header("x-experiment-override-token"), None);
        assert_eq!(request.header("x-experiment-override"), None);
    }
    // The right token does move the request: overrides work, forgeries don't.
    let response = get(
        &mut client,
        &[
            ("x-experiment-override", "canary"),
            ("x-experiment-override-token", OVERRIDE_TOKEN),
        ],
    );
    assert_eq!(
        (cohort_of(&response), served_by(&response)),
        ("canary", "v2")
    );
}

#[test]
fn e_metrics_are_labelled_series_on_stats_prometheus() {
    let dir = temp_dir();
    let gw = Gateway::new(&gateway_config(50, 50, &override_extra()));
    let envoy = Envoy::start("gateway", dir.path(), &gw.bootstrap);
    let mut client = Client::new(gw.port);
    let first = get(&mut client, &[]);
    let cookie = format!("{COOKIE}={}", first.set_cookie(COOKIE).expect("cookie"));
    let cohort = cohort_of(&first).to_string();
    for _ in 0..4 {
        get(&mut client, &[("cookie", &cookie)]);
    }
    let other = if cohort == "stable" {
        "canary"
    } else {
        "stable"
    };
    let accepted = get(
        &mut client,
        &[
            ("cookie", &cookie),
            ("x-experiment-override", other),
            ("x-experiment-override-token", OVERRIDE_TOKEN),
        ],
    );
    assert_eq!(cohort_of(&accepted), other);
    for token in ["nope", ""] {
        get(
            &mut client,
            &[
                ("cookie", &cookie),
                ("x-experiment-override", other),
                ("x-experiment-override-token", token),
            ],
        );
    }
    // 1 new + 4 returning + 1 overridden (returning) + 2 rejected (returning).
    let text = wait_for(
        "the counters and the duration histogram to be flushed",
        Duration::from_secs(15),
        || {
            let text = envoy.prometheus();
            let count = |c| {
                metric(
                    &text,
                    "sms_cohort_request_duration_milliseconds_count",
                    &[("cohort", c)],
                )
                .unwrap_or(0.0)
            };
            let rejected = metric(
                &text,
                "sms_cohort_overrides_total",
                &[("outcome", "rejected")],
            );
            (count(&cohort) + count(other) >= 8.0 && rejected == Some(2.0)).then_some(text)
        },
    );
    let value = |name: &str, labels: &[(&str, &str)]| {
        metric(&text, name, labels).unwrap_or_else(|| {
            let ours: Vec<&str> = text.lines().filter(|l| l.contains("sms_")).collect();
            panic!(
                "{name}{labels:?} not exposed; sms_ series:\n{}",
                ours.join("\n")
            )
        })
    };
    let requests = "sms_cohort_requests_total";
    assert_eq!(
        value(requests, &[("cohort", &cohort), ("response_class", "2xx")]),
        7.0
    );
    assert_eq!(
        value(requests, &[("cohort", other), ("response_class", "2xx")]),
        1.0
    );
    let users = "sms_cohort_users_total";
    assert_eq!(value(users, &[("cohort", &cohort), ("user", "new")]), 1.0);
    assert_eq!(
        value(users, &[("cohort", &cohort), ("user", "returning")]),
        6.0
    );
    assert_eq!(
        value(users, &[("cohort", other), ("user", "returning")]),
        1.0
    );
    let overrides = "sms_cohort_overrides_total";
    assert_eq!(value(overrides, &[("outcome", "accepted")]), 1.0);
    assert_eq!(value(overrides, &[("outcome", "rejected")]), 2.0);
    let histogram = "sms_cohort_request_duration_milliseconds";
    assert_eq!(
        value(&format!("{histogram}_count"), &[("cohort", &cohort)]),
        7.0
    );
    // Sub-millisecond buckets from stats_config.histogram_bucket_settings.
    value(
        &format!("{histogram}_bucket"),
        &[("cohort", &cohort), ("le", "0.5")],
    );
    assert_eq!(
        value(
            &format!("{histogram}_bucket"),
            &[("cohort", &cohort), ("le", "+Inf")]
        ),
        7.0
    );
    assert!(text.contains(&format!("# TYPE {requests} counter")));
    assert!(text.contains(&format!("# TYPE {histogram} histogram")));
    // Tag encoding must not leak into names.
    assert!(!text.contains("=.="), "an untagged series is exposed");
}

fn refused(plugin_config: &str, needles: &[&str]) {
    let dir = temp_dir();
    let mut bootstrap = Bootstrap::new();
    let port = free_port();
    let v1 = upstream("v1", "ham");
    bootstrap.clusters = vec![
        ("v1".into(), v1.port),
        ("v2".into(), v1.port),
        ("v3".into(), v1.port),
    ];
    bootstrap
        .listeners
        .push(gateway_listener(port, plugin_config, &ISTIO_SPLIT));
    let mut envoy = Envoy::spawn("refused", dir.path(), &bootstrap, &["--concurrency", "1"]);
    let status = wait_for(
        "Envoy to refuse the config",
        Duration::from_secs(30),
        || envoy.process.try_wait(),
    );
    let log = envoy.process.log();
    assert!(!status.success(), "Envoy accepted {plugin_config}:\n{log}");
    for needle in needles {
        assert!(log.contains(needle), "log lacks {needle:?}:\n{log}");
    }
}

#[test]
fn f_an_invalid_config_is_refused_naming_the_field() {
    refused(
        &gateway_config(90, 20, ""),
        &["invalid pluginConfig field `cohorts`", "90 + 20 = 110"],
    );
    refused(
        &gateway_config(90, 10, r#","cookie":{"nmae":"uid"}"#),
        &[
            "invalid pluginConfig field `cookie.nmae`",
            "not a known field",
        ],
    );
    refused(
        r#"{"role":"gateway","cohorts":[{"name":"stable","weight":90},{"name":"canary","weight":"10"}]}"#,
        &["`cohorts[1].weight`", "\"10\""],
    );
}

#[test]
fn g_mirrored_copies_reach_the_shadow_with_the_same_cohort() {
    let dir = temp_dir();
    let (v1, v2, v3) = (
        upstream("v1", "ham"),
        upstream("v2", "spam"),
        upstream("v3", "spam"),
    );

    // A sidecar per version that gets a sidecar in this test: its pod labels
    // in node metadata, the filter in the sidecar role, the app behind it.
    let sidecar = |version: &str, app: &Upstream, config: String| {
        let port = free_port();
        let mut bootstrap = Bootstrap::new();
        bootstrap
            .node_labels
            .insert("app".into(), "model-service".into());
        bootstrap
            .node_labels
            .insert("version".into(), version.into());
        bootstrap.clusters = vec![("app".into(), app.port)];
        bootstrap.listeners.push(ListenerSpec {
            name: "inbound".into(),
            port,
            wasm: Some((filter_wasm(), config)),
            routes: vec![Route::Weighted(vec![("app".into(), 100)])],
            mirror_cluster: None,
        });
        (
            Envoy::start(&format!("sidecar-{version}"), dir.path(), &bootstrap),
            port,
        )
    };
    // The node label wins over the config's fallback version.
    let (sidecar_v1, v1_port) = sidecar("v1", &v1, sidecar_config(r#","version":"fallback""#));
    let (sidecar_v3, v3_port) = sidecar("v3", &v3, sidecar_config(""));

    let port = free_port();
    let mut bootstrap = Bootstrap::new();
    bootstrap.clusters = vec![
        ("v1".into(), v1_port),
        ("v2".into(), v2.port),
        ("v3".into(), v3_port),
    ];
    bootstrap.listeners.push(gateway_listener(
        port,
        &gateway_config(50, 50, ""),
        &ISTIO_SPLIT,
    ));
    let _gateway = Envoy::start("gateway", dir.path(), &bootstrap);

    let mut client = Client::new(port);
    let mut primary = BTreeMap::new();
    let total = 60;
    for _ in 0..total {
        let response = get(&mut client, &[]);
        let cohort = cohort_of(&response).to_string();
        assert_eq!(served_by(&response), expected_upstream(&cohort));
        *primary.entry(cohort).or_insert(0usize) += 1;
    }
    // Mirrors are fire-and-forget: wait until all arrived.
    wait_for("every mirrored copy at v3", Duration::from_secs(10), || {
        (v3.count() >= total).then_some(())
    });
    assert_eq!(v3.count(), total);
    // Each copy carries the cohort of its original (same x-request-id).
    let originals: BTreeMap<String, String> = v1
        .requests()
        .into_iter()
        .chain(v2.requests())
        .map(|r| {
            (
                r.header("x-request-id").expect("x-request-id").to_string(),
                r.header(COHORT_HEADER).expect("cohort header").to_string(),
            )
        })
        .collect();
    assert_eq!(originals.len(), total);
    for copy in v3.requests() {
        let id = copy
            .header("x-request-id")
            .expect("x-request-id on the copy");
        assert_eq!(
            copy.header(COHORT_HEADER),
            originals.get(id).map(String::as_str),
            "{copy:?}"
        );
        assert!(
            copy.header("host").is_some_and(|h| h.ends_with("-shadow")),
            "{copy:?}"
        );
    }

    // The sidecars label by version (node metadata), cohort, prediction and
    // mirrored (the -shadow Host).
    let stable = primary.get("stable").copied().unwrap_or(0) as f64;
    let canary = primary.get("canary").copied().unwrap_or(0) as f64;
    let requests = "sms_model_requests_total";
    let v1_labels = [
        ("version", "v1"),
        ("cohort", "stable"),
        ("response_class", "2xx"),
        ("prediction", "ham"),
        ("mirrored", "false"),
    ];
    wait_for("the v1 sidecar's counter", Duration::from_secs(10), || {
        (metric(&sidecar_v1.prometheus(), requests, &v1_labels) == Some(stable)).then_some(())
    });
    let v3_text = wait_for(
        "the v3 sidecar to log every copy",
        Duration::from_secs(10),
        || {
            let text = sidecar_v3.prometheus();
            let n = |cohort| {
                metric(
                    &text,
                    requests,
                    &[
                        ("version", "v3"),
                        ("cohort", cohort),
                        ("response_class", "2xx"),
                        ("prediction", "spam"),
                        ("mirrored", "true"),
                    ],
                )
                .unwrap_or(0.0)
            };
            (n("stable") == stable && n("canary") == canary).then_some(text)
        },
    );
    assert!(
        !v3_text.contains("mirrored=\"false\"}"),
        "the shadow saw only mirrored traffic:\n{v3_text}"
    );
    let durations = wait_for("the v3 latency histogram", Duration::from_secs(15), || {
        metric(
            &sidecar_v3.prometheus(),
            "sms_model_request_duration_milliseconds_count",
            &[("version", "v3"), ("mirrored", "true")],
        )
        .filter(|&n| n == total as f64)
    });
    assert_eq!(durations, total as f64);
}

/// Requests are counted when Envoy deletes the stream, so one the client
/// abandons before any response is counted too, with `response_class="none"`.
#[test]
fn a_stream_reset_before_the_response_is_counted() {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    let dir = temp_dir();
    let mut gw = Gateway::new(&gateway_config(100, 0, ""));
    // v1 accepts the connection and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind a silent upstream");
    let silent_port = silent.local_addr().expect("silent upstream address").port();
    let (accepted, upstream_connection) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((connection, _)) = silent.accept() {
            let _ = accepted.send(connection);
        }
    });
    gw.bootstrap.clusters[0].1 = silent_port;
    let envoy = Envoy::start("gateway", dir.path(), &gw.bootstrap);

    let mut client = TcpStream::connect(("127.0.0.1", gw.port)).expect("connect to the gateway");
    client
        .write_all(
            format!("GET /sms HTTP/1.1\r\nhost: sms-checker.local\r\ncookie: {COOKIE}=abc\r\n\r\n")
                .as_bytes(),
        )
        .expect("send a request");
    // Once Envoy has the request upstream (v1 holds the connection), walk away.
    let _held = upstream_connection
        .recv_timeout(Duration::from_secs(10))
        .expect("Envoy forwards the request to v1");
    wait_for(
        "Envoy to count the upstream request",
        Duration::from_secs(10),
        || {
            metric(
                &envoy.prometheus(),
                "envoy_cluster_upstream_rq_total",
                &[("envoy_cluster_name", "v1")],
            )
            .filter(|&n| n == 1.0)
        },
    );
    drop(client);

    let requests = wait_for(
        "the reset request to be counted",
        Duration::from_secs(15),
        || {
            metric(
                &envoy.prometheus(),
                "sms_cohort_requests_total",
                &[("cohort", "stable"), ("response_class", "none")],
            )
        },
    );
    assert_eq!(requests, 1.0);
    let text = envoy.prometheus();
    assert_eq!(
        metric(
            &text,
            "sms_cohort_request_duration_milliseconds_count",
            &[("cohort", "stable")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "sms_cohort_requests_total",
            &[("cohort", "stable"), ("response_class", "2xx")]
        ),
        None
    );
    assert_eq!(gw.v2.count(), 0);
}

/// Envoy calls every `proxy_on_*` a module exports, so the build drops the
/// ones the filter leaves to the SDK's defaults (`WASM_UNUSED_EXPORTS` in
/// `mk/filter.mk`); metrics are counted on `proxy_on_delete`. A callback the
/// filter starts to implement must leave that list, or Envoy never calls it.
#[test]
fn the_module_exports_only_the_callbacks_it_implements() {
    let wasm = std::fs::read(filter_wasm()).expect("read the filter .wasm (make wasm)");
    let mut exports = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(&wasm) {
        if let wasmparser::Payload::ExportSection(section) = payload.expect("valid .wasm") {
            for export in section {
                exports.push(export.expect("export entry").name.to_string());
            }
        }
    }
    exports.sort();
    assert_eq!(
        exports,
        [
            "_initialize",
            "memory",
            "proxy_abi_version_0_2_1",
            "proxy_on_configure",
            "proxy_on_context_create",
            "proxy_on_delete",
            "proxy_on_memory_allocate",
            "proxy_on_request_headers",
            "proxy_on_response_headers",
            "proxy_on_tick",
            "proxy_on_vm_start",
        ]
    );
}

//! The HTTP contract, driven in-process through the `Router`.

use std::path::Path;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use model_service::app::{AppState, router};
use model_service::headers::HeaderNames;
use model_service::model::{Model, Version};
use serde_json::{Value, json};
use tower::ServiceExt;

fn models_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models"))
}

fn state(version: Version) -> AppState {
    let model = Model::load(models_dir(), version).expect("committed artifact loads");
    let state = AppState::new(model, HeaderNames::default()).expect("metrics registry");
    state.ready.store(true, Ordering::Release);
    state
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "body is not JSON ({err}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

fn post_json(body: impl Into<Body>) -> Request<Body> {
    Request::post("/predict")
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap()
}

async fn predict(app: &Router, sms: &str) -> Reply {
    send(app, post_json(json!({ "sms": sms }).to_string())).await
}

const SPAM: &str = "WINNER!! As a valued network customer you have been selected to receive a £900 prize reward! To claim call 09061701461. Claim code KL341. Valid 12 hours only.";
const HAM: &str = "Hey, are we still on for dinner tonight? I'll be there around 7.";

#[tokio::test]
async fn predict_answers_with_the_verdict_and_the_version_headers() {
    for version in Version::ALL {
        let app = router(state(version));
        for (sms, expected) in [(SPAM, "spam"), (HAM, "ham")] {
            let reply = predict(&app, sms).await;
            assert_eq!(reply.status, StatusCode::OK, "{version} {sms}");
            let body = reply.json();
            assert_eq!(body["result"], expected, "{version} {sms}");
            assert_eq!(body["sms"], sms);
            assert_eq!(body["version"], version.as_str());
            assert!(body["classifier"].as_str().is_some_and(|c| !c.is_empty()));
            let confidence = body["confidence"].as_f64().unwrap();
            assert!((0.5..=1.0).contains(&confidence), "{confidence}");
            assert_eq!(reply.header("x-model-version"), Some(version.as_str()));
            assert_eq!(reply.header("x-model-prediction"), Some(expected));
            assert_eq!(
                reply.header("content-type"),
                Some("application/json"),
                "{version}"
            );
        }
    }
}

#[tokio::test]
async fn request_ids_are_kept_or_made_and_the_cohort_is_echoed() {
    let app = router(state(Version::V1));
    let request = Request::post("/predict")
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .header("x-request-id", "abc-123")
        .header("x-experiment-cohort", "canary")
        .body(Body::from(r#"{"sms":"hello there"}"#))
        .unwrap();
    let reply = send(&app, request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-request-id"), Some("abc-123"));
    assert_eq!(reply.header("x-experiment-cohort"), Some("canary"));

    let first = predict(&app, "hello there").await;
    let second = predict(&app, "hello there").await;
    let made = first.header("x-request-id").expect("an id is made");
    assert_eq!(made.len(), 36, "UUID layout: {made}");
    assert_eq!(made.matches('-').count(), 4, "UUID layout: {made}");
    assert_ne!(Some(made), second.header("x-request-id"), "ids are unique");
    let reply = first;
    assert_eq!(reply.header("x-experiment-cohort"), None);
}

/// The header names the chart sets: the verdict and the cohort go out
/// under them, the cohort is read from the configured request header, and
/// the page reads the configured names.
#[tokio::test]
async fn configured_header_names_are_the_ones_used() {
    let name = |text: &str| axum::http::HeaderName::from_bytes(text.as_bytes()).unwrap();
    let names = HeaderNames::new(name("x-verdict"), name("x-arm"), name("x-arm-out")).unwrap();
    let model = Model::load(models_dir(), Version::V2).expect("committed artifact loads");
    let app = router(AppState::new(model, names).expect("metrics registry"));
    let request = Request::post("/predict")
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-arm", "canary")
        .header("x-experiment-cohort", "stable")
        .body(Body::from(json!({ "sms": SPAM }).to_string()))
        .unwrap();
    let reply = send(&app, request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-verdict"), Some("spam"));
    assert_eq!(reply.header("x-arm-out"), Some("canary"));
    assert_eq!(reply.header("x-model-version"), Some("v2"));
    for default in ["x-model-prediction", "x-experiment-cohort", "x-arm"] {
        assert_eq!(reply.header(default), None, "{default}");
    }

    let page = send(&app, Request::get("/sms").body(Body::empty()).unwrap()).await;
    let html = String::from_utf8(page.body.to_vec()).unwrap();
    assert!(html.contains(r#"data-cohort-header="x-arm-out""#), "{html}");
    assert!(html.contains(r#"data-version-header="x-model-version""#));
    assert!(!html.contains("x-experiment-cohort"));
}

/// Every bad input gets its status and a JSON body saying what is wrong.
#[tokio::test]
async fn bad_input_is_rejected_with_a_json_error() {
    let app = router(state(Version::V2));
    let too_long = json!({ "sms": "a".repeat(20_000) }).to_string();
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        (0..40).map(|_| Ok(Bytes::from(vec![b' '; 1024]))).collect();
    let cases: Vec<(&str, Request<Body>, StatusCode, &str)> = vec![
        (
            "invalid JSON",
            post_json("{\"sms\": "),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "not JSON at all",
            post_json("sms=hello"),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "missing sms",
            post_json(r#"{"text":"hi"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            "number sms",
            post_json(r#"{"sms":42}"#),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            "null sms",
            post_json(r#"{"sms":null}"#),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            "array body",
            post_json(r#"["hi"]"#),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            "empty body",
            post_json(""),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "invalid UTF-8",
            post_json(&b"{\"sms\":\"\xff\xfe\"}"[..]),
            StatusCode::BAD_REQUEST,
            "invalid_utf8",
        ),
        (
            "empty sms",
            post_json(r#"{"sms":""}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_sms",
        ),
        (
            "blank sms",
            post_json(r#"{"sms":" \t\n "}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_sms",
        ),
        (
            "declared too large",
            post_json(too_long),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            "streamed too large",
            post_json(Body::from_stream(futures::stream::iter(chunks))),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            "form content type",
            Request::post("/predict")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from("sms=hi"))
                .unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "no content type",
            Request::post("/predict")
                .body(Body::from(r#"{"sms":"hi"}"#))
                .unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "unknown route",
            Request::get("/nowhere").body(Body::empty()).unwrap(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "GET /predict",
            Request::get("/predict").body(Body::empty()).unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "DELETE /health",
            Request::delete("/health").body(Body::empty()).unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (what, request, status, code) in cases {
        let reply = send(&app, request).await;
        assert_eq!(reply.status, status, "{what}: {:?}", reply.body);
        assert_eq!(
            reply.header("content-type"),
            Some("application/json"),
            "{what}"
        );
        let body = reply.json();
        assert_eq!(body["error"], code, "{what}: {body}");
        assert_eq!(body["status"], status.as_u16(), "{what}");
        assert!(
            body["message"].as_str().is_some_and(|m| m.len() > 10),
            "{what}: {body}"
        );
        assert_eq!(reply.header("x-model-prediction"), None, "{what}");
    }
}

#[tokio::test]
async fn error_messages_say_what_is_wrong() {
    let app = router(state(Version::V1));
    let missing = send(&app, post_json(r#"{"text":"hi"}"#)).await.json();
    assert!(
        missing["message"]
            .as_str()
            .unwrap()
            .contains("missing field `sms`")
    );
    let number = send(&app, post_json(r#"{"sms":42}"#)).await.json();
    assert!(
        number["message"]
            .as_str()
            .unwrap()
            .contains("expected a string")
    );
    let large = send(&app, post_json(vec![b' '; 20_000])).await.json();
    assert!(large["message"].as_str().unwrap().contains("16384"));
}

#[tokio::test]
async fn health_ready_version_usage_and_page() {
    let state = state(Version::V3);
    let ready = state.ready.clone();
    let app = router(state);
    let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();

    let health = send(&app, get("/health")).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(
        health.json(),
        json!({"status":"healthy","service":"model-service"})
    );

    assert_eq!(send(&app, get("/ready")).await.status, StatusCode::OK);
    ready.store(false, Ordering::Release);
    let not_ready = send(&app, get("/ready")).await;
    assert_eq!(not_ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(not_ready.json()["status"], "not ready");
    assert_eq!(send(&app, get("/health")).await.status, StatusCode::OK);

    let version = send(&app, get("/version")).await.json();
    assert_eq!(version["version"], "v3");
    assert_eq!(version["classifier"], "hashed-multinomial-nb-byte-words");
    assert_eq!(
        version["dataset_sha256"],
        model_service::dataset::SHA256,
        "{version}"
    );
    assert!(version["accuracy"].as_f64().unwrap() > 0.9);

    let usage = send(&app, get("/")).await.json();
    for endpoint in [
        "POST /predict",
        "GET /sms",
        "GET /metrics",
        "GET /openapi.json",
    ] {
        assert!(
            usage["endpoints"][endpoint].is_string(),
            "{endpoint} in {usage}"
        );
    }

    let page = send(&app, get("/sms")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let html = String::from_utf8(page.body.to_vec()).unwrap();
    // Relative, so that it also works behind the gateway.
    assert!(html.contains(r#"fetch("predict""#), "{html}");
    assert!(html.contains("x-experiment-cohort"));
    assert!(html.contains("x-model-version"));
}

#[tokio::test]
async fn openapi_document_describes_the_routes() {
    let app = router(state(Version::V1));
    let doc = send(
        &app,
        Request::get("/openapi.json").body(Body::empty()).unwrap(),
    )
    .await
    .json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/predict", "/health", "/ready", "/version", "/metrics", "/sms", "/",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    let predict = &doc["paths"]["/predict"]["post"];
    for status in ["200", "400", "413", "415", "422"] {
        assert!(predict["responses"][status].is_object(), "{status}");
    }
    assert!(
        doc["paths"]["/metrics"]["get"]["responses"]["503"].is_object(),
        "the metrics error body is described"
    );
    let schema = &doc["components"]["schemas"]["PredictRequest"];
    assert_eq!(schema["required"], json!(["sms"]));
    // The document says what the service does: `sms` must hold a character
    // that `str::trim` keeps. Checked for every Unicode scalar value.
    let pattern = schema["properties"]["sms"]["pattern"]
        .as_str()
        .expect("sms pattern");
    let non_blank = regex::Regex::new(pattern).expect("pattern is a valid regex");
    for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
        assert_eq!(
            non_blank.is_match(c.encode_utf8(&mut [0; 4])),
            !c.is_whitespace(),
            "U+{:04X}",
            c as u32
        );
    }
    // Every error code the service sends is in the document's enum.
    let codes: Vec<&str> = model_service::error::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    assert_eq!(
        doc["components"]["schemas"]["ErrorCode"]["enum"],
        json!(codes)
    );
    assert_eq!(
        doc["components"]["schemas"]["ErrorBody"]["properties"]["error"]["$ref"],
        "#/components/schemas/ErrorCode"
    );
    let response = &doc["components"]["schemas"]["PredictResponse"]["properties"];
    for field in ["result", "classifier", "sms", "version", "confidence"] {
        assert!(response[field].is_object(), "{field}");
    }
}

fn scrape(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("valid exposition format")
}

fn value_of(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no {metric} {labels:?}"));
    match &sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        other => panic!("{metric} is not a single value: {other:?}"),
    }
}

#[tokio::test]
async fn metrics_count_predictions_latency_and_requests() {
    let app = router(state(Version::V2));
    for _ in 0..3 {
        assert_eq!(predict(&app, SPAM).await.status, StatusCode::OK);
    }
    for _ in 0..2 {
        assert_eq!(predict(&app, HAM).await.status, StatusCode::OK);
    }
    predict(&app, "   ").await;
    send(&app, Request::get("/nope/123").body(Body::empty()).unwrap()).await;

    let reply = send(&app, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(reply.body.to_vec()).unwrap();
    let scrape = scrape(&text);

    let v2 = ("version", "v2");
    assert_eq!(
        value_of(
            &scrape,
            "model_predictions_total",
            &[("result", "spam"), v2]
        ),
        3.0
    );
    assert_eq!(
        value_of(&scrape, "model_predictions_total", &[("result", "ham"), v2]),
        2.0
    );
    let ok = [("route", "/predict"), ("method", "POST"), ("status", "200")];
    assert_eq!(value_of(&scrape, "model_http_requests_total", &ok), 5.0);
    let empty = [("route", "/predict"), ("method", "POST"), ("status", "422")];
    assert_eq!(value_of(&scrape, "model_http_requests_total", &empty), 1.0);
    // Unknown paths share one label value, so clients cannot add series.
    let unknown = [("route", "unmatched"), ("method", "GET"), ("status", "404")];
    assert_eq!(
        value_of(&scrape, "model_http_requests_total", &unknown),
        1.0
    );
    assert!(!text.contains("/nope/123"));
    let info = [
        v2,
        ("classifier", "logistic-regression-words-bigrams-chargrams"),
    ];
    assert_eq!(value_of(&scrape, "model_info", &info), 1.0);

    let histogram = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "model_prediction_latency_seconds" && s.labels.get("version") == Some("v2")
        })
        .expect("latency histogram");
    let prometheus_parse::Value::Histogram(buckets) = &histogram.value else {
        panic!("not a histogram: {:?}", histogram.value);
    };
    let sub_ms: Vec<f64> = buckets
        .iter()
        .map(|b| b.less_than)
        .filter(|le| *le < 0.001)
        .collect();
    assert!(sub_ms.len() >= 5, "sub-millisecond buckets: {sub_ms:?}");
    let total = buckets.iter().find(|b| b.less_than.is_infinite()).unwrap();
    assert_eq!(total.count, 5.0);
    // A prediction takes microseconds: all five land below 1 ms.
    let under_ms = buckets.iter().find(|b| b.less_than == 0.001).unwrap();
    assert_eq!(under_ms.count, 5.0);
}

//! What users do through the gateway: a request as a known or a new user,
//! many users side by side, and what each one got back.

use std::time::Duration;

use model_service::headers::VERSION_HEADER;
use sms_checker_filter::config::{DEFAULT_COHORT_HEADER, DEFAULT_COOKIE_NAME};

use crate::mesh::Gateway;

/// The names the chart's values give the experiment's headers and cookie,
/// as a client sees them; [`Names::default`] holds the chart's defaults
/// (which are the filter's and the model-service's own).
#[derive(Debug, Clone)]
pub struct Names {
    /// The response header with the user's cohort (`experiment.responseHeader`).
    pub cohort_response: String,
    /// The cookie holding the user id (`experiment.cookie.name`).
    pub cookie: String,
}

impl Default for Names {
    fn default() -> Names {
        Names {
            cohort_response: DEFAULT_COHORT_HEADER.to_string(),
            cookie: UID_COOKIE.to_string(),
        }
    }
}

/// What one request through the gateway answered.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// The model-service's version header: which version answered.
    pub version: Option<String>,
    /// The cohort the gateway filter echoed in its response header.
    pub cohort: Option<String>,
    /// The user id a `Set-Cookie` of the user cookie carries, if any.
    pub set_uid: Option<String>,
    /// Every response header, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::header_value(&self.headers, name)
    }
}

/// The user cookie set by the gateway filter, under the chart's default name.
pub const UID_COOKIE: &str = DEFAULT_COOKIE_NAME;

/// `POST /predict` through the gateway as a user with `uid` (or a new user
/// when `None`), under the chart's default names. Transport errors come
/// back as status 0.
pub fn predict(agent: &ureq::Agent, gateway: &Gateway, uid: Option<&str>, sms: &str) -> Reply {
    predict_with(agent, gateway, &Names::default(), uid, &[], sms)
}

/// [`predict`] under `names`, with extra request `headers`.
pub fn predict_with(
    agent: &ureq::Agent,
    gateway: &Gateway,
    names: &Names,
    uid: Option<&str>,
    headers: &[(&str, &str)],
    sms: &str,
) -> Reply {
    let mut request = gateway
        .post(agent, "/predict")
        .header("content-type", "application/json");
    if let Some(uid) = uid {
        request = request.header("cookie", &format!("{}={uid}", names.cookie));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = serde_json::json!({ "sms": sms }).to_string();
    match request.send(&body) {
        Err(err) => Reply {
            status: 0,
            version: None,
            cohort: None,
            set_uid: None,
            headers: Vec::new(),
            body: err.to_string(),
        },
        Ok(mut response) => {
            let headers: Vec<(String, String)> = response
                .headers()
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_string(),
                        value.to_str().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            let header = |name: &str| crate::header_value(&headers, name).map(str::to_string);
            let version = header(VERSION_HEADER);
            let cohort = header(&names.cohort_response);
            let set_uid = headers
                .iter()
                .filter(|(n, _)| n == "set-cookie")
                .find_map(|(_, c)| {
                    c.split(';')
                        .next()?
                        .trim()
                        .strip_prefix(&format!("{}=", names.cookie))
                        .map(str::to_string)
                });
            Reply {
                status: response.status().as_u16(),
                version,
                cohort,
                set_uid,
                headers,
                body: response.body_mut().read_to_string().unwrap_or_default(),
            }
        }
    }
}

/// Runs `work(i)` for `i in 0..count` on `threads` threads, each with its
/// own HTTP client, and returns the results in order.
pub fn parallel<T: Send>(
    count: usize,
    threads: usize,
    work: impl Fn(&ureq::Agent, usize) -> T + Sync,
) -> Vec<T> {
    let results: Vec<std::sync::Mutex<Option<T>>> =
        (0..count).map(|_| std::sync::Mutex::new(None)).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(15)))
                    .build()
                    .new_agent();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let value = work(&agent, i);
                    if let Ok(mut slot) = results[i].lock() {
                        *slot = Some(value);
                    }
                }
            });
        }
    });
    results
        .into_iter()
        .map(|slot| slot.into_inner().ok().flatten().expect("every item ran"))
        .collect()
}

/// Users arriving for the first time: each one's id (the cookie the gateway
/// set) and cohort, in arrival order.
#[derive(Debug, Clone)]
pub struct Arrivals {
    pub uids: Vec<String>,
    pub cohorts: Vec<String>,
}

/// `users` new users each send one `POST /predict` through `gateway`.
pub fn arrive(gateway: &Gateway, users: usize, threads: usize, sms: &str) -> Arrivals {
    let first = parallel(users, threads, |agent, _| {
        predict(agent, gateway, None, sms)
    });
    let field = |pick: fn(&Reply) -> Option<String>, what: &str| -> Vec<String> {
        first
            .iter()
            .map(|r| pick(r).unwrap_or_else(|| panic!("no {what}: {r:?}")))
            .collect()
    };
    Arrivals {
        uids: field(|r| r.set_uid.clone(), "user cookie"),
        cohorts: field(|r| r.cohort.clone(), "cohort"),
    }
}

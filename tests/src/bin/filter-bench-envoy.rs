//! The Envoy of the filter benchmark (`filter/bench/run.sh`), built with the
//! tests' bootstrap builder so both shape Envoy alike: one admin port and
//! three listeners with the same direct response, one without a Wasm
//! filter, one behind a Wasm filter that sets one header, one behind the
//! cohort filter as the gateway runs it by default (90/10, no QA override).
//!
//! Usage: filter-bench-envoy OUT ADMIN NONE ONE COHORT ONE_HEADER_WASM FILTER_WASM
//!
//! Writes the bootstrap (JSON) to OUT and prints, for the script's checks,
//! the cohort filter's cookie name and the response header it sets.

use std::path::PathBuf;
use std::process::ExitCode;

use sms_checker_filter::config::{DEFAULT_COHORT_HEADER, DEFAULT_COOKIE_NAME};
use sms_checker_tests::envoy::{Bootstrap, ListenerSpec, Route};

const COHORT_CONFIG: &str =
    r#"{"role":"gateway","cohorts":[{"name":"stable","weight":90},{"name":"canary","weight":10}]}"#;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, admin, none, one, cohort, one_header_wasm, filter_wasm] = args.as_slice() else {
        eprintln!(
            "usage: filter-bench-envoy OUT ADMIN NONE ONE COHORT ONE_HEADER_WASM FILTER_WASM"
        );
        return ExitCode::from(2);
    };
    let port = |text: &str| -> Result<u16, String> {
        text.parse().map_err(|_| format!("{text:?} is not a port"))
    };
    let listener = |name: &str, port: u16, wasm: Option<(PathBuf, String)>| ListenerSpec {
        name: name.to_string(),
        port,
        wasm,
        routes: vec![Route::Direct {
            status: 200,
            body: "ok".into(),
        }],
        mirror_cluster: None,
    };
    let bootstrap = (|| -> Result<Bootstrap, String> {
        let mut bootstrap = Bootstrap::new();
        bootstrap.admin_port = port(admin)?;
        bootstrap.listeners = vec![
            listener("none", port(none)?, None),
            listener(
                "one-header",
                port(one)?,
                Some((PathBuf::from(one_header_wasm), String::new())),
            ),
            listener(
                "cohort",
                port(cohort)?,
                Some((PathBuf::from(filter_wasm), COHORT_CONFIG.to_string())),
            ),
        ];
        Ok(bootstrap)
    })();
    let bootstrap = match bootstrap {
        Ok(bootstrap) => bootstrap,
        Err(err) => {
            eprintln!("filter-bench-envoy: {err}");
            return ExitCode::from(2);
        }
    };
    if let Err(err) = std::fs::write(out, bootstrap.to_json().to_string()) {
        eprintln!("filter-bench-envoy: write {out}: {err}");
        return ExitCode::FAILURE;
    }
    println!("{DEFAULT_COOKIE_NAME} {DEFAULT_COHORT_HEADER}");
    ExitCode::SUCCESS
}

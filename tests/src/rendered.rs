//! What the chart tests read from a render: the objects, validated, by kind
//! and name, and the experiment's routes, subsets and cohorts in them.

use serde_json::Value;

use crate::chart::{describe, find, of_kind, render};
use crate::schemas;

/// Renders with `sets`, validates every object, and returns them.
pub fn render_valid(sets: &[(&str, &str)]) -> Vec<Value> {
    let objects = render(sets).unwrap_or_else(|e| panic!("render {sets:?}: {e}"));
    assert!(!objects.is_empty(), "nothing rendered for {sets:?}");
    schemas::validate_all(&objects)
        .unwrap_or_else(|e| panic!("validate render with {sets:?}: {e}"));
    objects
}

/// Renders with `sets` and returns helm's error message, failing the test if
/// the chart accepted the values.
pub fn render_error(sets: &[(&str, &str)]) -> String {
    match render(sets) {
        Ok(_) => panic!("values {sets:?} were accepted, expected a rejection"),
        Err(err) => match err.helm_message() {
            Some(message) => message.to_string(),
            None => panic!("values {sets:?}: expected a helm error, got {err}"),
        },
    }
}

pub fn get<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    find(objects, kind, name).unwrap_or_else(|| {
        panic!(
            "{kind}/{name} not rendered; have {:?}",
            objects.iter().map(describe).collect::<Vec<_>>()
        )
    })
}

pub fn virtual_service(objects: &[Value]) -> &Value {
    get(objects, "VirtualService", "model-service")
}

pub fn route<'a>(vs: &'a Value, name: &str) -> Option<&'a Value> {
    vs["spec"]["http"]
        .as_array()
        .expect("http routes")
        .iter()
        .find(|r| r["name"] == name)
}

/// (subset, weight) of each destination of a route; weight None when absent.
pub fn destinations(route: &Value) -> Vec<(String, Option<i64>)> {
    route["route"]
        .as_array()
        .expect("destinations")
        .iter()
        .map(|d| {
            (
                d["destination"]["subset"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                d["weight"].as_i64(),
            )
        })
        .collect()
}

pub fn subsets(objects: &[Value]) -> Vec<String> {
    get(objects, "DestinationRule", "model-service")["spec"]["subsets"]
        .as_array()
        .expect("subsets")
        .iter()
        .map(|s| {
            assert_eq!(s["labels"]["version"], s["name"], "subset labels");
            s["name"].as_str().unwrap_or("").to_string()
        })
        .collect()
}

pub fn names_of(objects: &[Value], kind: &str) -> Vec<String> {
    let mut names: Vec<String> = of_kind(objects, kind)
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    names.sort();
    names
}

/// The kinds that deliver the cohort filter (`filter.api`).
pub const FILTER_KINDS: [&str; 2] = ["WasmPlugin", "TrafficExtension"];

/// Every WasmPlugin and TrafficExtension rendered.
pub fn filter_resources(objects: &[Value]) -> Vec<&Value> {
    objects
        .iter()
        .filter(|o| FILTER_KINDS.iter().any(|k| o["kind"] == *k))
        .collect()
}

/// The filter's pluginConfig in a WasmPlugin (`spec.pluginConfig`) or a
/// TrafficExtension (`spec.wasm.pluginConfig`).
pub fn filter_config(resource: &Value) -> &Value {
    match resource["kind"].as_str() {
        Some("TrafficExtension") => &resource["spec"]["wasm"]["pluginConfig"],
        _ => &resource["spec"]["pluginConfig"],
    }
}

/// The pluginConfig of the filter resource called `name`, of either kind.
pub fn plugin_config<'a>(objects: &'a [Value], name: &str) -> &'a Value {
    let resource = filter_resources(objects)
        .into_iter()
        .find(|o| o["metadata"]["name"] == name)
        .unwrap_or_else(|| {
            panic!(
                "no WasmPlugin or TrafficExtension {name}; have {:?}",
                objects.iter().map(describe).collect::<Vec<_>>()
            )
        });
    filter_config(resource)
}

pub fn cohorts(config: &Value) -> Vec<(String, i64)> {
    config["cohorts"]
        .as_array()
        .expect("cohorts")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("").to_string(),
                c["weight"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

pub fn pair(name: &str, weight: i64) -> (String, i64) {
    (name.to_string(), weight)
}

pub fn dest(subset: &str, weight: Option<i64>) -> (String, Option<i64>) {
    (subset.to_string(), weight)
}

/// Every filter resource's cohorts, which must agree with each other.
pub fn all_cohorts(objects: &[Value]) -> Vec<(String, i64)> {
    let plugins = filter_resources(objects);
    assert!(
        !plugins.is_empty(),
        "no WasmPlugin or TrafficExtension rendered"
    );
    let first = cohorts(filter_config(plugins[0]));
    for plugin in &plugins {
        assert_eq!(
            cohorts(filter_config(plugin)),
            first,
            "{} disagrees on cohorts",
            describe(plugin)
        );
    }
    first
}

pub fn assert_mirror(route: &Value, percentage: f64) {
    assert_eq!(
        route["mirror"]["subset"], "v3",
        "mirror of {}",
        route["name"]
    );
    assert_eq!(route["mirror"]["host"], "model-service");
    assert_eq!(route["mirror"]["port"]["number"], 8081);
    assert_eq!(
        route["mirrorPercentage"]["value"].as_f64(),
        Some(percentage),
        "mirror percentage of {}",
        route["name"]
    );
}

/// Renders each case and checks that helm refuses it with a message naming
/// the expected field.
pub fn assert_refused(cases: &[(&[(&str, &str)], &str)]) {
    for (sets, expected) in cases {
        let message = render_error(sets);
        assert!(
            message.contains(expected),
            "{sets:?}: expected {expected:?} in {message}"
        );
    }
}

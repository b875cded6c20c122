//! The HTTP header names the service shares with the cohort filter: which
//! request header carries the user's cohort, which response headers carry
//! the verdict and the cohort back. The chart sets the first three (its
//! `filter.predictionHeader`, `experiment.cohortHeader` and
//! `experiment.responseHeader`); the defaults are the filter's own.

use axum::http::HeaderName;

/// The version that answered; the `/sms` page shows it.
pub const VERSION_HEADER: &str = "x-model-version";
/// Kept from the request (Envoy sets it), or made; echoed on the response.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The configurable names, checked once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderNames {
    /// Response header with the verdict (`spam` or `ham`), which the
    /// sidecar's cohort filter counts by.
    pub prediction: HeaderName,
    /// Request header the gateway's cohort filter sets to the user's cohort.
    pub cohort: HeaderName,
    /// Response header that tells the client its cohort; the gateway's
    /// filter sets the same one, and the `/sms` page reads it.
    pub cohort_response: HeaderName,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the response headers {first} and {second} are both {name}: each needs its own name (see model-service --help)"
)]
pub struct HeaderClash {
    pub first: &'static str,
    pub second: &'static str,
    pub name: String,
}

impl HeaderNames {
    /// The names, unless two response headers the service sets would be one.
    pub fn new(
        prediction: HeaderName,
        cohort: HeaderName,
        cohort_response: HeaderName,
    ) -> Result<HeaderNames, HeaderClash> {
        let responses = [
            ("the prediction header", prediction.as_str()),
            ("the cohort response header", cohort_response.as_str()),
            ("the version header", VERSION_HEADER),
            ("the request id header", REQUEST_ID_HEADER),
        ];
        for (i, (first, name)) in responses.iter().enumerate() {
            if let Some((second, _)) = responses[i + 1..].iter().find(|(_, n)| n == name) {
                return Err(HeaderClash {
                    first,
                    second,
                    name: name.to_string(),
                });
            }
        }
        Ok(HeaderNames {
            prediction,
            cohort,
            cohort_response,
        })
    }
}

impl Default for HeaderNames {
    /// The cohort filter's defaults (its `pluginConfig` without these keys).
    fn default() -> HeaderNames {
        use sms_checker_filter::config::{DEFAULT_COHORT_HEADER, DEFAULT_PREDICTION_HEADER};
        HeaderNames {
            prediction: HeaderName::from_static(DEFAULT_PREDICTION_HEADER),
            cohort: HeaderName::from_static(DEFAULT_COHORT_HEADER),
            cohort_response: HeaderName::from_static(DEFAULT_COHORT_HEADER),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> HeaderName {
        HeaderName::from_bytes(text.as_bytes()).unwrap()
    }

    #[test]
    fn two_response_headers_may_not_share_a_name() {
        let clash = HeaderNames::new(name("x-a"), name("x-b"), name("X-A")).unwrap_err();
        assert_eq!(clash.name, "x-a");
        assert!(clash.to_string().contains("prediction"), "{clash}");
        let clash = HeaderNames::new(name(VERSION_HEADER), name("x-b"), name("x-c")).unwrap_err();
        assert_eq!(clash.second, "the version header");
        // The cohort request header may be any name: it is read, not set.
        assert!(HeaderNames::new(name("x-a"), name("x-a"), name("x-c")).is_ok());
        assert!(HeaderNames::new(name("x-a"), name("x-b"), name("x-b")).is_ok());
    }
}

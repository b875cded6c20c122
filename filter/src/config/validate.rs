//! The raw fields of a `pluginConfig`, every one optional, checked and turned
//! into the typed configuration its role calls for.

use serde_json::Number;

use super::object::Object;
use super::{
    Cohort, ConfigError, CookieConfig, DEFAULT_COHORT_HEADER, DEFAULT_COOKIE_MAX_AGE,
    DEFAULT_COOKIE_NAME, DEFAULT_EXPERIMENT, DEFAULT_OVERRIDE_HEADER,
    DEFAULT_OVERRIDE_TOKEN_HEADER, DEFAULT_PREDICTION_HEADER, DEFAULT_SALT,
    DEFAULT_SHADOW_HOST_SUFFIX, GatewayConfig, MAX_COOKIE_MAX_AGE, OverrideConfig, PluginConfig,
    RESERVED_COHORT_NAMES, Role, RoleKind, SidecarConfig,
};

const MAX_NAME_LEN: usize = 63;
const MAX_HEADER_NAME_LEN: usize = 128;
const MAX_TEXT_LEN: usize = 256;

pub(super) struct RawConfig {
    pub(super) role: Option<String>,
    pub(super) experiment: Option<String>,
    pub(super) cohort_header: Option<String>,
    pub(super) cohorts: Option<Vec<RawCohort>>,
    // gateway
    pub(super) salt: Option<String>,
    pub(super) user_id_header: Option<String>,
    pub(super) cookie: Option<RawCookie>,
    pub(super) response_header: Option<String>,
    pub(super) clear_route_cache: Option<bool>,
    pub(super) override_: Option<RawOverride>,
    // sidecar
    pub(super) version: Option<String>,
    pub(super) prediction_header: Option<String>,
    pub(super) mirrored: Option<bool>,
    pub(super) shadow_host_suffix: Option<String>,
}

pub(super) struct RawCohort {
    pub(super) name: Option<String>,
    pub(super) weight: Option<Number>,
}

pub(super) struct RawCookie {
    pub(super) name: Option<String>,
    pub(super) max_age_seconds: Option<Number>,
    pub(super) secure: Option<bool>,
}

impl RawCookie {
    pub(super) fn finish(self, o: Object<'_>) -> Result<RawCookie, ConfigError> {
        o.finish().map(|()| self)
    }
}

pub(super) struct RawOverride {
    pub(super) header: Option<String>,
    pub(super) token_header: Option<String>,
    pub(super) token_sha256: Option<String>,
}

impl RawOverride {
    pub(super) fn finish(self, o: Object<'_>) -> Result<RawOverride, ConfigError> {
        o.finish().map(|()| self)
    }
}

impl RawConfig {
    pub(super) fn validate(self) -> Result<PluginConfig, ConfigError> {
        let role = match self.role.as_deref() {
            Some("gateway") => RoleKind::Gateway,
            Some("sidecar") => RoleKind::Sidecar,
            Some(other) => {
                return Err(ConfigError::invalid(
                    "role",
                    "must be \"gateway\" or \"sidecar\"",
                    other,
                ));
            }
            None => return Err(ConfigError::new("role", "is required", None)),
        };
        self.reject_other_role(role)?;

        let experiment = match self.experiment {
            Some(e) => text("experiment", e)?,
            None => DEFAULT_EXPERIMENT.to_string(),
        };
        let cohort_header = header_name("cohortHeader", self.cohort_header, DEFAULT_COHORT_HEADER)?;
        let cohorts = cohorts(self.cohorts)?;

        let role = match role {
            RoleKind::Gateway => {
                let salt = match self.salt {
                    Some(s) => text("salt", s)?,
                    None => DEFAULT_SALT.to_string(),
                };
                let user_id_header = match self.user_id_header {
                    Some(h) => Some(header_name("userIdHeader", Some(h), "")?),
                    None => None,
                };
                let response_header =
                    header_name("responseHeader", self.response_header, &cohort_header)?;
                let cookie = cookie(self.cookie)?;
                let override_ = match self.override_ {
                    Some(o) => Some(override_config(o)?),
                    None => None,
                };
                Role::Gateway(GatewayConfig {
                    salt,
                    user_id_header,
                    cookie,
                    response_header,
                    override_,
                    clear_route_cache: self.clear_route_cache.unwrap_or(false),
                })
            }
            RoleKind::Sidecar => {
                let version = match self.version {
                    Some(v) if is_label_value(&v) => Some(v),
                    Some(v) => {
                        return Err(ConfigError::invalid(
                            "version",
                            "must be 1-63 characters of [A-Za-z0-9._-]",
                            &v,
                        ));
                    }
                    None => None,
                };
                let prediction_header = header_name(
                    "predictionHeader",
                    self.prediction_header,
                    DEFAULT_PREDICTION_HEADER,
                )?;
                let shadow_host_suffix = match self.shadow_host_suffix {
                    Some(s)
                        if !s.is_empty()
                            && s.len() <= MAX_NAME_LEN
                            && s.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') =>
                    {
                        s.to_ascii_lowercase()
                    }
                    Some(s) => {
                        return Err(ConfigError::invalid(
                            "shadowHostSuffix",
                            "must be 1-63 characters of [A-Za-z0-9.-]",
                            &s,
                        ));
                    }
                    None => DEFAULT_SHADOW_HOST_SUFFIX.to_string(),
                };
                Role::Sidecar(SidecarConfig {
                    version,
                    prediction_header,
                    mirrored: self.mirrored.unwrap_or(false),
                    shadow_host_suffix,
                })
            }
        };

        Ok(PluginConfig {
            experiment,
            cohort_header,
            cohorts,
            role,
        })
    }

    /// A field of the other role is almost always a config meant for the
    /// other Envoy: refuse it rather than ignore it.
    fn reject_other_role(&self, role: RoleKind) -> Result<(), ConfigError> {
        let (present, other): (&[(&str, bool)], RoleKind) = match role {
            RoleKind::Gateway => (
                &[
                    ("version", self.version.is_some()),
                    ("predictionHeader", self.prediction_header.is_some()),
                    ("mirrored", self.mirrored.is_some()),
                    ("shadowHostSuffix", self.shadow_host_suffix.is_some()),
                ],
                RoleKind::Sidecar,
            ),
            RoleKind::Sidecar => (
                &[
                    ("salt", self.salt.is_some()),
                    ("userIdHeader", self.user_id_header.is_some()),
                    ("cookie", self.cookie.is_some()),
                    ("responseHeader", self.response_header.is_some()),
                    ("clearRouteCache", self.clear_route_cache.is_some()),
                    ("override", self.override_.is_some()),
                ],
                RoleKind::Gateway,
            ),
        };
        match present.iter().find(|(_, set)| *set) {
            Some((field, _)) => Err(ConfigError::new(
                *field,
                format!(
                    "applies only to role \"{}\", not \"{}\"",
                    other.as_str(),
                    role.as_str()
                ),
                None,
            )),
            None => Ok(()),
        }
    }
}

fn text(field: &str, value: String) -> Result<String, ConfigError> {
    if value.is_empty() || value.len() > MAX_TEXT_LEN || value.chars().any(char::is_control) {
        return Err(ConfigError::invalid(
            field,
            format!("must be 1-{MAX_TEXT_LEN} bytes without control characters"),
            &value,
        ));
    }
    Ok(value)
}

/// An HTTP header name (RFC 9110 token), stored lower-cased as Envoy and
/// HTTP/2 see it. Pseudo-headers and the headers Envoy owns are refused.
fn header_name(field: &str, value: Option<String>, default: &str) -> Result<String, ConfigError> {
    let Some(value) = value else {
        return Ok(default.to_string());
    };
    if value.is_empty() || value.len() > MAX_HEADER_NAME_LEN || !value.bytes().all(is_tchar) {
        return Err(ConfigError::invalid(
            field,
            format!("must be an HTTP header name (1-{MAX_HEADER_NAME_LEN} token characters)"),
            &value,
        ));
    }
    let lower = value.to_ascii_lowercase();
    const OWNED: [&str; 8] = [
        "host",
        "cookie",
        "set-cookie",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "te",
    ];
    if OWNED.contains(&lower.as_str()) {
        return Err(ConfigError::invalid(
            field,
            "must not be a header that carries HTTP framing, host or cookies",
            &value,
        ));
    }
    Ok(lower)
}

/// RFC 9110 `tchar`.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A Kubernetes label value, which is what a version is.
pub(crate) fn is_label_value(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_NAME_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn cohorts(raw: Option<Vec<RawCohort>>) -> Result<Vec<Cohort>, ConfigError> {
    let Some(raw) = raw else {
        return Err(ConfigError::new("cohorts", "is required", None));
    };
    if raw.is_empty() {
        return Err(ConfigError::new(
            "cohorts",
            "must list at least one cohort",
            Some("[]".to_string()),
        ));
    }
    let mut cohorts: Vec<Cohort> = Vec::with_capacity(raw.len());
    for (i, c) in raw.into_iter().enumerate() {
        let name_field = format!("cohorts[{i}].name");
        let name = c
            .name
            .ok_or_else(|| ConfigError::new(&name_field, "is required", None))?;
        if name.is_empty()
            || name.len() > MAX_NAME_LEN
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(ConfigError::invalid(
                name_field,
                "must be 1-63 characters of [a-z0-9-]",
                &name,
            ));
        }
        if RESERVED_COHORT_NAMES.contains(&name.as_str()) {
            return Err(ConfigError::invalid(
                name_field,
                "is reserved for requests without a known cohort",
                &name,
            ));
        }
        if cohorts.iter().any(|seen| seen.name == name) {
            return Err(ConfigError::invalid(
                name_field,
                "duplicates an earlier cohort",
                &name,
            ));
        }
        let weight_field = format!("cohorts[{i}].weight");
        let weight = c
            .weight
            .ok_or_else(|| ConfigError::new(&weight_field, "is required", None))?;
        let weight = match weight.as_u64() {
            Some(w) if w <= 100 => w as u8,
            _ => {
                return Err(ConfigError::new(
                    weight_field,
                    "must be an integer from 0 to 100",
                    Some(weight.to_string()),
                ));
            }
        };
        cohorts.push(Cohort { name, weight });
    }
    let sum: u32 = cohorts.iter().map(|c| u32::from(c.weight)).sum();
    if sum != 100 {
        let weights: Vec<String> = cohorts.iter().map(|c| c.weight.to_string()).collect();
        return Err(ConfigError::new(
            "cohorts",
            "weights must sum to 100",
            Some(format!("{} = {sum}", weights.join(" + "))),
        ));
    }
    Ok(cohorts)
}

fn cookie(raw: Option<RawCookie>) -> Result<CookieConfig, ConfigError> {
    let raw = raw.unwrap_or(RawCookie {
        name: None,
        max_age_seconds: None,
        secure: None,
    });
    let name = match raw.name {
        Some(n) if !n.is_empty() && n.len() <= MAX_NAME_LEN && n.bytes().all(is_tchar) => n,
        Some(n) => {
            return Err(ConfigError::invalid(
                "cookie.name",
                "must be a cookie name (1-63 token characters)",
                &n,
            ));
        }
        None => DEFAULT_COOKIE_NAME.to_string(),
    };
    let max_age_seconds = match raw.max_age_seconds {
        None => DEFAULT_COOKIE_MAX_AGE,
        Some(n) => match n.as_u64() {
            Some(v) if (1..=MAX_COOKIE_MAX_AGE).contains(&v) => v,
            _ => {
                return Err(ConfigError::new(
                    "cookie.maxAgeSeconds",
                    format!("must be an integer from 1 to {MAX_COOKIE_MAX_AGE} (400 days)"),
                    Some(n.to_string()),
                ));
            }
        },
    };
    Ok(CookieConfig {
        name,
        max_age_seconds,
        secure: raw.secure.unwrap_or(false),
    })
}

fn override_config(raw: RawOverride) -> Result<OverrideConfig, ConfigError> {
    let header = header_name("override.header", raw.header, DEFAULT_OVERRIDE_HEADER)?;
    let token_header = header_name(
        "override.tokenHeader",
        raw.token_header,
        DEFAULT_OVERRIDE_TOKEN_HEADER,
    )?;
    if header == token_header {
        return Err(ConfigError::invalid(
            "override.tokenHeader",
            "must differ from override.header",
            &token_header,
        ));
    }
    let Some(hex) = raw.token_sha256 else {
        return Err(ConfigError::new(
            "override.tokenSha256",
            "is required when override is set",
            None,
        ));
    };
    let token_sha256 = parse_sha256_hex(&hex).ok_or_else(|| {
        ConfigError::invalid(
            "override.tokenSha256",
            "must be 64 lowercase hex digits (the SHA-256 of the token)",
            &hex,
        )
    })?;
    Ok(OverrideConfig {
        header,
        token_header,
        token_sha256,
    })
}

fn parse_sha256_hex(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let nibble = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

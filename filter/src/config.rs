//! The `pluginConfig` contract: parsed once in `on_configure`, validated field
//! by field, and rejected with an error that names the field and the value.
//!
//! Parsing goes through a raw serde layer (every key optional, unknown keys
//! denied) so that a typo in a WasmPlugin fails loudly, then `validate` turns
//! it into a typed [`PluginConfig`] whose role decides which fields apply.

use std::fmt;

use serde_json::{Map, Number, Value};

/// Default name of the experiment, part of the hash input.
pub const DEFAULT_EXPERIMENT: &str = "sms-model";
/// Default request header the VirtualService routes on.
pub const DEFAULT_COHORT_HEADER: &str = "x-experiment-cohort";
/// Default salt of the assignment hash.
pub const DEFAULT_SALT: &str = "sms-checker";
/// Default name of the cookie that holds the random user id.
pub const DEFAULT_COOKIE_NAME: &str = "sms-checker-uid";
/// Default cookie lifetime: 30 days.
pub const DEFAULT_COOKIE_MAX_AGE: u64 = 2_592_000;
/// Browsers cap cookie lifetimes at 400 days; a longer one is a mistake.
pub const MAX_COOKIE_MAX_AGE: u64 = 400 * 86_400;
/// Default header naming the cohort a QA override asks for.
pub const DEFAULT_OVERRIDE_HEADER: &str = "x-experiment-override";
/// Default header carrying the QA override token.
pub const DEFAULT_OVERRIDE_TOKEN_HEADER: &str = "x-experiment-override-token";
/// Default response header the model-service sets with its prediction.
pub const DEFAULT_PREDICTION_HEADER: &str = "x-model-prediction";
/// Default suffix Envoy appends to the Host of mirrored requests.
pub const DEFAULT_SHADOW_HOST_SUFFIX: &str = "-shadow";

/// Labels the sidecar uses for a missing or unknown cohort header, so no
/// cohort may take these names.
pub const RESERVED_COHORT_NAMES: [&str; 2] = ["none", "unknown"];

const MAX_NAME_LEN: usize = 63;
const MAX_HEADER_NAME_LEN: usize = 128;
const MAX_TEXT_LEN: usize = 256;

/// A rejected configuration: which field, what was wrong, and the value seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Path of the offending field, e.g. `cohorts[1].weight` (empty for the
    /// document itself).
    pub field: String,
    /// What was wrong.
    pub reason: String,
    /// The offending value as it appeared, when there is one.
    pub value: Option<String>,
}

impl ConfigError {
    fn new(field: impl Into<String>, reason: impl Into<String>, value: Option<String>) -> Self {
        ConfigError {
            field: field.into(),
            reason: reason.into(),
            value,
        }
    }

    fn invalid(field: impl Into<String>, reason: impl Into<String>, value: &str) -> Self {
        Self::new(field, reason, Some(shorten(format!("{value:?}"))))
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = if self.field.is_empty() {
            "pluginConfig"
        } else {
            &self.field
        };
        write!(f, "invalid pluginConfig field `{field}`: {}", self.reason)?;
        if let Some(value) = &self.value {
            write!(f, " (got {value})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Which Envoy this instance of the filter runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleKind {
    Gateway,
    Sidecar,
}

impl RoleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleKind::Gateway => "gateway",
            RoleKind::Sidecar => "sidecar",
        }
    }
}

/// One cohort and its share of users, in percent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cohort {
    pub name: String,
    pub weight: u8,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig {
    pub experiment: String,
    /// Lower-cased.
    pub cohort_header: String,
    /// Non-empty, weights sum to 100, names unique.
    pub cohorts: Vec<Cohort>,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Gateway(GatewayConfig),
    Sidecar(SidecarConfig),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    pub salt: String,
    pub user_id_header: Option<String>,
    pub cookie: CookieConfig,
    pub response_header: String,
    pub override_: Option<OverrideConfig>,
    /// Call Envoy's `clear_route_cache` foreign function after setting the
    /// cohort header. Envoy already clears the route cache when a module on
    /// Proxy-Wasm ABI 0.2.1 (this one) changes a request header, so the call
    /// is off by default: it only costs time there.
    pub clear_route_cache: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieConfig {
    pub name: String,
    pub max_age_seconds: u64,
    pub secure: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideConfig {
    pub header: String,
    pub token_header: String,
    pub token_sha256: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarConfig {
    pub version: Option<String>,
    pub prediction_header: String,
    pub mirrored: bool,
    pub shadow_host_suffix: String,
}

impl PluginConfig {
    /// Parses and validates a `pluginConfig` JSON document.
    pub fn from_json(bytes: &[u8]) -> Result<PluginConfig, ConfigError> {
        let doc: Value = serde_json::from_slice(bytes)
            .map_err(|err| ConfigError::new("", format!("is not valid JSON: {err}"), None))?;
        let mut root = Object::new("", &doc)?;
        let raw = RawConfig {
            role: root.string("role")?,
            experiment: root.string("experiment")?,
            cohort_header: root.string("cohortHeader")?,
            cohorts: root.cohorts("cohorts")?,
            salt: root.string("salt")?,
            user_id_header: root.string("userIdHeader")?,
            cookie: match root.object("cookie")? {
                Some(mut o) => Some(
                    RawCookie {
                        name: o.string("name")?,
                        max_age_seconds: o.number("maxAgeSeconds")?,
                        secure: o.boolean("secure")?,
                    }
                    .finish(o)?,
                ),
                None => None,
            },
            response_header: root.string("responseHeader")?,
            clear_route_cache: root.boolean("clearRouteCache")?,
            override_: match root.object("override")? {
                Some(mut o) => Some(
                    RawOverride {
                        header: o.string("header")?,
                        token_header: o.string("tokenHeader")?,
                        token_sha256: o.string("tokenSha256")?,
                    }
                    .finish(o)?,
                ),
                None => None,
            },
            version: root.string("version")?,
            prediction_header: root.string("predictionHeader")?,
            mirrored: root.boolean("mirrored")?,
            shadow_host_suffix: root.string("shadowHostSuffix")?,
        };
        root.finish()?;
        raw.validate()
    }

    pub fn role_kind(&self) -> RoleKind {
        match self.role {
            Role::Gateway(_) => RoleKind::Gateway,
            Role::Sidecar(_) => RoleKind::Sidecar,
        }
    }

    /// Index of the cohort called `name`.
    pub fn cohort_index(&self, name: &[u8]) -> Option<usize> {
        self.cohorts.iter().position(|c| c.name.as_bytes() == name)
    }
}

/// A JSON object being read field by field; [`Object::finish`] rejects the
/// keys nobody asked for, so a misspelt field is an error, never ignored.
///
/// Walking a `serde_json::Value` rather than deriving `Deserialize` keeps the
/// full path in every message (`cohorts[1].weight`, `cookie.nmae`) and keeps
/// the `.wasm` small.
struct Object<'a> {
    path: String,
    map: &'a Map<String, Value>,
    seen: Vec<&'static str>,
}

impl<'a> Object<'a> {
    fn new(path: &str, value: &'a Value) -> Result<Object<'a>, ConfigError> {
        match value {
            Value::Object(map) => Ok(Object {
                path: path.to_string(),
                map,
                seen: Vec::new(),
            }),
            other => Err(ConfigError::new(
                path,
                "must be a JSON object",
                Some(describe(other)),
            )),
        }
    }

    fn field_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value of `key`; JSON `null` counts as absent (Helm renders unset
    /// optional values that way).
    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.seen.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn string(&mut self, key: &'static str) -> Result<Option<String>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(ConfigError::new(
                self.field_path(key),
                "must be a string",
                Some(describe(other)),
            )),
        }
    }

    fn boolean(&mut self, key: &'static str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(ConfigError::new(
                self.field_path(key),
                "must be true or false",
                Some(describe(other)),
            )),
        }
    }

    fn number(&mut self, key: &'static str) -> Result<Option<Number>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(Some(n.clone())),
            Some(other) => Err(ConfigError::new(
                self.field_path(key),
                "must be a number",
                Some(describe(other)),
            )),
        }
    }

    fn object(&mut self, key: &'static str) -> Result<Option<Object<'a>>, ConfigError> {
        let path = self.field_path(key);
        self.get(key).map(|v| Object::new(&path, v)).transpose()
    }

    fn cohorts(&mut self, key: &'static str) -> Result<Option<Vec<RawCohort>>, ConfigError> {
        let path = self.field_path(key);
        let items = match self.get(key) {
            None => return Ok(None),
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(ConfigError::new(
                    path,
                    "must be a list of {name, weight}",
                    Some(describe(other)),
                ));
            }
        };
        let mut cohorts = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let mut o = Object::new(&format!("{path}[{i}]"), item)?;
            let cohort = RawCohort {
                name: o.string("name")?,
                weight: o.number("weight")?,
            };
            o.finish()?;
            cohorts.push(cohort);
        }
        Ok(Some(cohorts))
    }

    fn finish(self) -> Result<(), ConfigError> {
        match self.map.keys().find(|k| !self.seen.contains(&k.as_str())) {
            Some(unknown) => Err(ConfigError::new(
                self.field_path_owned(unknown),
                format!(
                    "is not a known field (known here: {})",
                    self.seen.join(", ")
                ),
                None,
            )),
            None => Ok(()),
        }
    }

    fn field_path_owned(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

/// A JSON value as an error message shows it, shortened.
fn describe(value: &Value) -> String {
    shorten(value.to_string())
}

/// Keeps log lines readable when the bad value is long.
fn shorten(text: String) -> String {
    if text.len() > 80 {
        let mut end = 77;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &text[..end])
    } else {
        text
    }
}

struct RawConfig {
    role: Option<String>,
    experiment: Option<String>,
    cohort_header: Option<String>,
    cohorts: Option<Vec<RawCohort>>,
    // gateway
    salt: Option<String>,
    user_id_header: Option<String>,
    cookie: Option<RawCookie>,
    response_header: Option<String>,
    clear_route_cache: Option<bool>,
    override_: Option<RawOverride>,
    // sidecar
    version: Option<String>,
    prediction_header: Option<String>,
    mirrored: Option<bool>,
    shadow_host_suffix: Option<String>,
}

struct RawCohort {
    name: Option<String>,
    weight: Option<Number>,
}

struct RawCookie {
    name: Option<String>,
    max_age_seconds: Option<Number>,
    secure: Option<bool>,
}

impl RawCookie {
    fn finish(self, o: Object<'_>) -> Result<RawCookie, ConfigError> {
        o.finish().map(|()| self)
    }
}

struct RawOverride {
    header: Option<String>,
    token_header: Option<String>,
    token_sha256: Option<String>,
}

impl RawOverride {
    fn finish(self, o: Object<'_>) -> Result<RawOverride, ConfigError> {
        o.finish().map(|()| self)
    }
}

impl RawConfig {
    fn validate(self) -> Result<PluginConfig, ConfigError> {
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

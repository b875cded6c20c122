//! The `pluginConfig` contract: parsed once in `on_configure`, validated field
//! by field, and rejected with an error that names the field and the value.
//!
//! Parsing goes through a raw serde layer (every key optional, unknown keys
//! denied) so that a typo in a WasmPlugin fails loudly, then `validate` turns
//! it into a typed [`PluginConfig`] whose role decides which fields apply.

use std::fmt;

use serde_json::Value;

use object::{Object, shorten};
pub(crate) use validate::is_label_value;
use validate::{RawConfig, RawCookie, RawOverride};

mod object;
mod validate;

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

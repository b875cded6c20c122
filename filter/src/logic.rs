//! The request path without the host: what the gateway and the sidecar decide
//! from the headers they read. The proxy-wasm layer only moves bytes between
//! Envoy and these functions.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::assign::Assigner;
use crate::config::{GatewayConfig, OverrideConfig, PluginConfig, Role, SidecarConfig};
use crate::cookie::{self, NEW_ID_LEN, SetCookie};
use crate::metrics::{CohortLabel, MetricSet, UNKNOWN_VERSION};

/// A configuration compiled for the request path: everything derived once.
#[derive(Debug, Clone)]
pub struct Filter {
    pub config: PluginConfig,
    pub metrics: MetricSet,
    pub role: CompiledRole,
}

#[derive(Debug, Clone)]
pub enum CompiledRole {
    Gateway(Gateway),
    Sidecar(Sidecar),
}

#[derive(Debug, Clone)]
pub struct Gateway {
    pub assigner: Assigner,
    pub set_cookie: SetCookie,
    pub config: GatewayConfig,
}

#[derive(Debug, Clone)]
pub struct Sidecar {
    pub config: SidecarConfig,
}

impl Filter {
    /// Compiles `config`; `node_version` is the pod's `version` label from the
    /// proxy's node metadata, if any (sidecar only; it wins over the config).
    pub fn new(config: PluginConfig, node_version: Option<&str>) -> Filter {
        let names = config.cohorts.iter().map(|c| c.name.clone()).collect();
        let (role, version) = match &config.role {
            Role::Gateway(g) => (
                CompiledRole::Gateway(Gateway {
                    assigner: Assigner::new(&g.salt, &config.experiment, &config.cohorts),
                    set_cookie: SetCookie::new(&g.cookie),
                    config: g.clone(),
                }),
                UNKNOWN_VERSION,
            ),
            Role::Sidecar(s) => (
                CompiledRole::Sidecar(Sidecar { config: s.clone() }),
                node_version
                    .filter(|v| !v.is_empty())
                    .or(s.version.as_deref())
                    .unwrap_or(UNKNOWN_VERSION),
            ),
        };
        Filter {
            metrics: MetricSet::new(names, version),
            config,
            role,
        }
    }

    pub fn cohort_name(&self, index: usize) -> &str {
        self.config
            .cohorts
            .get(index)
            .map_or("", |c| c.name.as_str())
    }
}

/// Where the gateway found the user's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// The configured user-id header (an authenticated user).
    Header,
    /// The experiment cookie.
    Cookie,
    /// Neither: a fresh id the response sets as a cookie.
    New([u8; NEW_ID_LEN]),
}

/// What happened to a QA override request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverrideOutcome {
    Accepted,
    Rejected,
}

/// The request headers the gateway reads (values as Envoy gives them).
#[derive(Debug, Clone, Copy, Default)]
pub struct GatewayRequest<'a> {
    pub user_id: Option<&'a [u8]>,
    pub cookie: Option<&'a [u8]>,
    pub override_cohort: Option<&'a [u8]>,
    pub override_token: Option<&'a [u8]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayDecision {
    pub cohort: usize,
    pub identity: Identity,
    pub override_outcome: Option<OverrideOutcome>,
}

impl Gateway {
    /// Picks the identity and cohort of a request. `fresh_id` is called only
    /// when the request carries no usable identity.
    pub fn decide(
        &self,
        config: &PluginConfig,
        request: GatewayRequest<'_>,
        fresh_id: impl FnOnce() -> [u8; NEW_ID_LEN],
    ) -> GatewayDecision {
        let header_id = if self.config.user_id_header.is_some() {
            request.user_id.and_then(cookie::user_id_from_header)
        } else {
            None
        };
        let cookie_name = self.config.cookie.name.as_bytes();
        let (identity, cohort) = if let Some(id) = header_id {
            (Identity::Header, self.assigner.cohort(id))
        } else if let Some(id) = request
            .cookie
            .and_then(|header| cookie::find_cookie(header, cookie_name))
        {
            (Identity::Cookie, self.assigner.cohort(id))
        } else {
            let id = fresh_id();
            (Identity::New(id), self.assigner.cohort(&id))
        };

        let (cohort, override_outcome) = match (&self.config.override_, request.override_cohort) {
            (Some(o), Some(wanted)) => {
                match check_override(o, config, wanted, request.override_token) {
                    Some(index) => (index, Some(OverrideOutcome::Accepted)),
                    None => (cohort, Some(OverrideOutcome::Rejected)),
                }
            }
            _ => (cohort, None),
        };
        GatewayDecision {
            cohort,
            identity,
            override_outcome,
        }
    }
}

/// The cohort a QA override asks for, if the token's SHA-256 matches (in
/// constant time) and the cohort exists.
fn check_override(
    o: &OverrideConfig,
    config: &PluginConfig,
    wanted: &[u8],
    token: Option<&[u8]>,
) -> Option<usize> {
    let token = token?;
    let digest = Sha256::digest(token);
    let token_ok: bool = digest.as_slice().ct_eq(&o.token_sha256).into();
    let index = config.cohort_index(wanted.trim_ascii());
    if token_ok { index } else { None }
}

impl Sidecar {
    /// The cohort label of a request from its cohort header.
    pub fn cohort_label(config: &PluginConfig, header: Option<&[u8]>) -> CohortLabel {
        match header {
            None => CohortLabel::None,
            Some(value) => config
                .cohort_index(value.trim_ascii())
                .map_or(CohortLabel::Unknown, CohortLabel::Known),
        }
    }

    /// Whether a request is a mirrored copy: the config says so (Istio >= 1.28
    /// keeps the Host as is), or the Host ends with the shadow suffix.
    pub fn is_mirrored(&self, authority: Option<&[u8]>) -> bool {
        self.config.mirrored
            || authority
                .is_some_and(|a| host_has_suffix(a, self.config.shadow_host_suffix.as_bytes()))
    }
}

/// Whether the host part of an authority (`host`, `host:port`, `[v6]:port`)
/// ends with `suffix`, ignoring ASCII case.
pub fn host_has_suffix(authority: &[u8], suffix: &[u8]) -> bool {
    let host = strip_port(authority.trim_ascii());
    host.len() > suffix.len() && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

fn strip_port(authority: &[u8]) -> &[u8] {
    if authority.first() == Some(&b'[') {
        // An IPv6 literal never carries a shadow suffix inside the brackets.
        return authority;
    }
    match authority.iter().rposition(|&b| b == b':') {
        Some(colon) if authority[colon + 1..].iter().all(u8::is_ascii_digit) => &authority[..colon],
        _ => authority,
    }
}

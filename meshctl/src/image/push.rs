//! Pushing the layouts with skopeo, and the chart values that pin them.

use std::path::Path;
use std::process::Command;

use super::ImageError;

/// A registry destination `host[:port][/namespace...]`, as `make push
/// REGISTRY=...` takes it: no scheme, no tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry(String);

impl std::str::FromStr for Registry {
    type Err = ImageError;

    fn from_str(raw: &str) -> Result<Registry, ImageError> {
        let invalid = |reason: &'static str| ImageError::InvalidRegistry {
            value: raw.to_string(),
            reason,
        };
        let value = raw.trim_end_matches('/');
        if value.is_empty() {
            return Err(invalid("it is empty"));
        }
        if value.contains("://") {
            return Err(invalid(
                "give host[:port][/namespace] without a scheme (skopeo adds docker://)",
            ));
        }
        let mut parts = value.split('/');
        let host = parts.next().unwrap_or_default();
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
        if !host_ok {
            return Err(invalid(
                "the host part may hold only letters, digits, '.', '-' and ':port'",
            ));
        }
        for component in parts {
            if !is_path_component(component) {
                return Err(invalid(
                    "each namespace component must be lower-case letters and digits, separated by '.', '_', '__' or '-'",
                ));
            }
        }
        Ok(Registry(value.to_string()))
    }
}

impl std::fmt::Display for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The distribution spec's path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut index = 0;
    while index < bytes.len() {
        if alnum(bytes[index]) {
            index += 1;
            continue;
        }
        let start = index;
        while index < bytes.len() && !alnum(bytes[index]) {
            index += 1;
        }
        let separator = &component[start..index];
        let dashes = separator.bytes().all(|b| b == b'-');
        if !(separator == "." || separator == "_" || separator == "__" || dashes) {
            return false;
        }
    }
    true
}

/// An OCI tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn check_tag(tag: &str) -> Result<(), ImageError> {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && tag.len() <= 128 {
        Ok(())
    } else {
        Err(ImageError::InvalidTag {
            tag: tag.to_string(),
        })
    }
}

/// Copies the layout at `layout` (tag `tag`) to `registry/name:tag`. skopeo
/// is told to keep digests, so what lands in the registry is byte for byte
/// what was built; returns the digest skopeo reports for the pushed manifest.
pub fn skopeo_copy(
    skopeo: &Path,
    layout: &Path,
    destination: &str,
    tag: &str,
    tls_verify: bool,
) -> Result<String, ImageError> {
    let digest_file = DigestFile(std::env::temp_dir().join(format!(
        "meshctl-push-{}-{}.digest",
        std::process::id(),
        destination.replace(['/', ':'], "_")
    )));
    let mut command = Command::new(skopeo);
    command
        .arg("copy")
        .arg("--quiet")
        .arg("--preserve-digests")
        .arg(format!("--dest-tls-verify={tls_verify}"))
        .arg("--digestfile")
        .arg(&digest_file.0)
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{destination}:{tag}"));
    let output = command.output().map_err(|source| ImageError::Skopeo {
        command: format!("{command:?}"),
        detail: match source.kind() {
            std::io::ErrorKind::NotFound => {
                "skopeo not found (install Debian's skopeo: `make tools`)".to_string()
            }
            _ => source.to_string(),
        },
    })?;
    if !output.status.success() {
        return Err(ImageError::Skopeo {
            command: format!("{command:?}"),
            detail: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    let digest = std::fs::read_to_string(&digest_file.0).map_err(|source| ImageError::Io {
        path: digest_file.0.clone(),
        source,
    })?;
    Ok(digest.trim().to_string())
}

/// The file skopeo writes the pushed digest to, removed when done.
struct DigestFile(std::path::PathBuf);

impl Drop for DigestFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The `helm --set` flags that pin both images by digest, with the chart's
/// key names (`manifests/sms-checker/values.yaml`).
///
/// For an `oci://` URL, Istio checks `filter.sha256` against the image
/// manifest's digest (what the registry serves), not against the module's
/// bytes; the module's own SHA-256 is what an `https://` URL would take.
pub fn chart_set_flags(
    filter_repository: &str,
    filter_digest: &str,
    model_service_repository: &str,
    model_service_digest: &str,
) -> Vec<String> {
    let filter_hex = filter_digest.trim_start_matches("sha256:");
    vec![
        format!("--set filter.url=oci://{filter_repository}@{filter_digest}"),
        format!("--set filter.sha256={filter_hex}"),
        format!("--set modelService.image.repository={model_service_repository}"),
        format!("--set modelService.image.digest={model_service_digest}"),
    ]
}

/// The `--set` flags that pin the gate's image (meshctl's) by digest.
pub fn gate_set_flags(repository: &str, digest: &str) -> Vec<String> {
    vec![
        format!("--set gate.image.repository={repository}"),
        format!("--set gate.image.digest={digest}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_are_host_port_and_namespace() {
        for good in [
            "127.0.0.1:5000",
            "127.0.0.1:5000/ns",
            "ghcr.io/sms-checker",
            "registry.example.com/a/b-c/d__e",
            "localhost:5000/team.one/",
        ] {
            assert!(good.parse::<Registry>().is_ok(), "{good}");
        }
        assert_eq!(
            "localhost:5000/ns/"
                .parse::<Registry>()
                .expect("ok")
                .to_string(),
            "localhost:5000/ns"
        );
        for (bad, why) in [
            ("", "empty"),
            ("docker://ghcr.io/x", "without a scheme"),
            ("ghcr.io/Upper", "lower-case"),
            ("ghcr.io/a//b", "lower-case"),
            ("ghcr.io/-lead", "lower-case"),
            ("host name/x", "host part"),
        ] {
            let err = bad.parse::<Registry>().expect_err(bad);
            assert!(err.to_string().contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn tags_follow_the_distribution_spec() {
        for good in ["0.1.0", "latest", "_x", "a-b.c_d", &"t".repeat(128)] {
            assert!(check_tag(good).is_ok(), "{good}");
        }
        for bad in ["", ".x", "-x", "a:b", "a/b", &"t".repeat(129)] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn set_flags_pin_by_digest_with_the_chart_keys() {
        let flags = chart_set_flags(
            "r:5000/ns/sms-checker-filter",
            "sha256:aaaa",
            "r:5000/ns/model-service",
            "sha256:bbbb",
        );
        assert_eq!(
            flags,
            [
                "--set filter.url=oci://r:5000/ns/sms-checker-filter@sha256:aaaa",
                "--set filter.sha256=aaaa",
                "--set modelService.image.repository=r:5000/ns/model-service",
                "--set modelService.image.digest=sha256:bbbb",
            ]
        );
    }

    #[test]
    fn a_missing_skopeo_is_reported_clearly() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = skopeo_copy(
            &tmp.path().join("no-such-skopeo"),
            tmp.path(),
            "127.0.0.1:1/x",
            "t",
            false,
        )
        .expect_err("no skopeo");
        assert!(err.to_string().contains("skopeo not found"), "{err}");
    }
}

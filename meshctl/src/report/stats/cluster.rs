//! Users, not requests, are assigned to cohorts, and each user sends many
//! requests. Counting requests as independent trials understates the
//! variance when a user's requests tend to fail (or be slow) together:
//! Kish's design effect 1 + (m - 1) icc for clusters of average size m and
//! intra-cluster correlation icc says by how much. m comes from the data
//! (requests per new user); icc cannot be read from aggregate counters, so
//! it is a stated assumption (icc = 1 makes each user one observation).

/// The design effect for `requests` from `users` users, or `None` without
/// users to divide by.
pub fn design_effect(requests: f64, users: f64, icc: f64) -> Option<f64> {
    if users <= 0.0 || requests <= 0.0 {
        return None;
    }
    let per_user = (requests / users).max(1.0);
    Some(1.0 + (per_user - 1.0) * icc.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Kish (1965), Survey Sampling, section 5.4: deff = 1 + (m - 1) rho.
    // 5,000 requests from 500 users (m = 10) at icc 0.05: 1 + 9 * 0.05 =
    // 1.45; at icc 1 the effective sample is the 500 users (deff = 10).
    #[test]
    fn kish_design_effect() {
        assert_eq!(design_effect(5000.0, 500.0, 0.05), Some(1.45));
        assert_eq!(design_effect(5000.0, 500.0, 1.0), Some(10.0));
        assert_eq!(design_effect(300.0, 300.0, 0.5), Some(1.0));
        // More new users than requests (users counted before a window's
        // requests): never below 1.
        assert_eq!(design_effect(10.0, 40.0, 0.5), Some(1.0));
        assert_eq!(design_effect(10.0, 0.0, 0.5), None);
    }
}

//! Cohort filter.

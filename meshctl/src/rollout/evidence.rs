//! Reading the evidence: the report's dataset (exact counter increases per
//! version and cohort) over one check interval. The second seam: the
//! simulation tests read synthetic counters through it.

use crate::report::dataset::Dataset;
use crate::report::dataset::MetricNames;
use crate::report::model::Window;
use crate::report::prom::Prometheus;

/// What the experiment's metrics show over a window.
pub trait EvidenceReader {
    fn read(&mut self, window: &Window) -> anyhow::Result<Dataset>;
}

/// A Prometheus scraping the gateway and the sidecars.
pub struct FromPrometheus {
    pub client: Prometheus,
    pub names: MetricNames,
}

impl EvidenceReader for FromPrometheus {
    fn read(&mut self, window: &Window) -> anyhow::Result<Dataset> {
        Ok(Dataset::fetch(&self.client, self.names.clone(), window)?)
    }
}

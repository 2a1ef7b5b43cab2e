//! Metrics as Envoy keeps stats: process-wide by name (every VM that
//! defines the same name shares it), while each VM numbers the metrics it
//! defined with its own ids.

use std::collections::BTreeMap;

use crate::abi::{MetricType, Status};

/// A metric's current value, as a test reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    Counter(u64),
    Gauge(i64),
    /// Every recorded value, in order.
    Histogram(Vec<u64>),
}

#[derive(Debug)]
enum Metric {
    Counter(u64),
    Gauge(i64),
    Histogram(Vec<u64>),
}

impl Metric {
    fn new(kind: MetricType) -> Self {
        match kind {
            MetricType::Counter => Metric::Counter(0),
            MetricType::Gauge => Metric::Gauge(0),
            MetricType::Histogram => Metric::Histogram(Vec::new()),
        }
    }

    fn kind(&self) -> MetricType {
        match self {
            Metric::Counter(_) => MetricType::Counter,
            Metric::Gauge(_) => MetricType::Gauge,
            Metric::Histogram(_) => MetricType::Histogram,
        }
    }
}

/// Process-wide metrics by name.
#[derive(Default)]
pub(crate) struct Metrics {
    by_name: BTreeMap<String, Metric>,
}

impl Metrics {
    /// Defining again with the same type is fine; another type is BadArgument.
    pub fn define(&mut self, name: &str, kind: MetricType) -> Result<(), Status> {
        match self.by_name.get(name) {
            Some(m) if m.kind() != kind => Err(Status::BadArgument),
            Some(_) => Ok(()),
            None => {
                self.by_name.insert(name.to_string(), Metric::new(kind));
                Ok(())
            }
        }
    }

    /// Counters and gauges can be read; histograms cannot (Envoy).
    pub fn get(&self, name: &str) -> Result<u64, Status> {
        match self.by_name.get(name).ok_or(Status::NotFound)? {
            Metric::Counter(v) => Ok(*v),
            Metric::Gauge(v) => Ok(*v as u64),
            Metric::Histogram(_) => Err(Status::BadArgument),
        }
    }

    /// Counter: adds; gauge: sets; histogram: records a sample.
    pub fn record(&mut self, name: &str, value: i64) -> Result<(), Status> {
        match self.by_name.get_mut(name).ok_or(Status::NotFound)? {
            Metric::Counter(v) => *v = v.wrapping_add(value as u64),
            Metric::Gauge(v) => *v = value,
            Metric::Histogram(h) => h.push(value as u64),
        }
        Ok(())
    }

    /// Counters only go up; gauges move either way; histograms refuse.
    pub fn increment(&mut self, name: &str, offset: i64) -> Result<(), Status> {
        match self.by_name.get_mut(name).ok_or(Status::NotFound)? {
            Metric::Counter(v) if offset > 0 => *v = v.wrapping_add(offset as u64),
            Metric::Gauge(v) => *v = v.wrapping_add(offset),
            _ => return Err(Status::BadArgument),
        }
        Ok(())
    }

    pub fn value(&self, name: &str) -> Option<MetricValue> {
        Some(match self.by_name.get(name)? {
            Metric::Counter(v) => MetricValue::Counter(*v),
            Metric::Gauge(v) => MetricValue::Gauge(*v),
            Metric::Histogram(h) => MetricValue::Histogram(h.clone()),
        })
    }

    pub fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }
}

/// One VM's metric ids (index + 1) → process-wide names.
#[derive(Default)]
pub(crate) struct MetricIds(Vec<String>);

impl MetricIds {
    /// The id of `name`, allocating one on first use.
    pub fn id_for(&mut self, name: &str) -> u32 {
        match self.0.iter().position(|n| n == name) {
            Some(i) => i as u32 + 1,
            None => {
                self.0.push(name.to_string());
                self.0.len() as u32
            }
        }
    }

    pub fn name(&self, id: u32) -> Result<&str, Status> {
        self.0
            .get((id as usize).wrapping_sub(1))
            .map(String::as_str)
            .ok_or(Status::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_histograms() {
        let mut m = Metrics::default();
        m.define("c", MetricType::Counter).unwrap();
        m.define("c", MetricType::Counter).unwrap();
        assert_eq!(m.define("c", MetricType::Gauge), Err(Status::BadArgument));
        m.increment("c", 2).unwrap();
        assert_eq!(m.increment("c", -1), Err(Status::BadArgument));
        m.record("c", 3).unwrap();
        assert_eq!(m.get("c"), Ok(5));

        m.define("g", MetricType::Gauge).unwrap();
        m.record("g", 42).unwrap();
        m.increment("g", -2).unwrap();
        assert_eq!(m.value("g"), Some(MetricValue::Gauge(40)));

        m.define("h", MetricType::Histogram).unwrap();
        m.record("h", 7).unwrap();
        m.record("h", 9).unwrap();
        assert_eq!(m.get("h"), Err(Status::BadArgument));
        assert_eq!(m.increment("h", 1), Err(Status::BadArgument));
        assert_eq!(m.value("h"), Some(MetricValue::Histogram(vec![7, 9])));

        assert_eq!(m.get("nope"), Err(Status::NotFound));
        assert_eq!(m.names(), vec!["c", "g", "h"]);
    }

    #[test]
    fn ids_are_per_vm_and_start_at_one() {
        let mut ids = MetricIds::default();
        assert_eq!(ids.id_for("a"), 1);
        assert_eq!(ids.id_for("b"), 2);
        assert_eq!(ids.id_for("a"), 1);
        assert_eq!(ids.name(2), Ok("b"));
        assert_eq!(ids.name(0), Err(Status::NotFound));
        assert_eq!(ids.name(3), Err(Status::NotFound));
    }
}

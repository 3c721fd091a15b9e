//! Host metrics from `/proc` and `/sys` under a configurable root (e.g.
//! `/hostfs` in a container), every `metrics_interval`, named per the
//! OpenTelemetry system semantic conventions, sent as OTLP metrics through
//! the same exporter as the logs.
//!
//! CPU time is summed over all CPUs (`cpu.mode` attribute) to keep the series
//! count bounded; utilisation is the share of each mode since the previous
//! collection.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::Duration;

use periscope_proto::otlp::ExportMetricsServiceRequest;
use periscope_proto::otlp::common::v1::{InstrumentationScope, KeyValue};
use periscope_proto::otlp::metrics::v1::{
    AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    metric, number_data_point,
};
use periscope_proto::otlp::resource::v1::Resource;

use crate::batch::{Batch, Payload};
use crate::parse::enrich::kv_str;

fn unix_ns() -> u64 {
    u64::try_from(periscope_proto::unix_now_ns()).unwrap_or(0)
}
use crate::telemetry::Stats;

/// Clock ticks per second of `/proc/stat` (USER_HZ, 100 on every Linux ABI).
const USER_HZ: f64 = 100.0;
const CPU_MODES: [&str; 8] = [
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "interrupt",
    "softirq",
    "steal",
];
const FS_TYPES: [&str; 8] = [
    "ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "vfat", "f2fs",
];

/// A collector of host metrics keeping the state needed for rates.
#[derive(Debug)]
pub struct HostMetrics {
    root: PathBuf,
    start_ns: u64,
    prev_cpu: Option<[u64; 8]>,
}

#[derive(Debug, Default)]
struct Builder {
    metrics: Vec<Metric>,
    now: u64,
    start: u64,
}

fn attrs(kv: &[(&str, &str)]) -> Vec<KeyValue> {
    kv.iter().map(|(k, v)| kv_str(k, *v)).collect()
}

impl Builder {
    fn point(
        &self,
        a: Vec<KeyValue>,
        v: number_data_point::Value,
        cumulative: bool,
    ) -> NumberDataPoint {
        NumberDataPoint {
            attributes: a,
            start_time_unix_nano: if cumulative { self.start } else { 0 },
            time_unix_nano: self.now,
            value: Some(v),
            ..Default::default()
        }
    }
    fn sum(
        &mut self,
        name: &str,
        unit: &str,
        monotonic: bool,
        pts: Vec<(Vec<KeyValue>, number_data_point::Value)>,
    ) {
        if pts.is_empty() {
            return;
        }
        let data_points = pts
            .into_iter()
            .map(|(a, v)| self.point(a, v, true))
            .collect();
        self.metrics.push(Metric {
            name: name.into(),
            unit: unit.into(),
            data: Some(metric::Data::Sum(Sum {
                data_points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: monotonic,
            })),
            ..Default::default()
        });
    }
    fn gauge(
        &mut self,
        name: &str,
        unit: &str,
        pts: Vec<(Vec<KeyValue>, number_data_point::Value)>,
    ) {
        if pts.is_empty() {
            return;
        }
        let data_points = pts
            .into_iter()
            .map(|(a, v)| self.point(a, v, false))
            .collect();
        self.metrics.push(Metric {
            name: name.into(),
            unit: unit.into(),
            data: Some(metric::Data::Gauge(Gauge { data_points })),
            ..Default::default()
        });
    }
}

use number_data_point::Value::{AsDouble, AsInt};

fn read(root: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(root.join(rel)).ok()
}

/// The aggregate `cpu` line of `/proc/stat` in ticks, in [`CPU_MODES`] order.
fn cpu_ticks(stat: &str) -> Option<[u64; 8]> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let mut out = [0u64; 8];
    for (i, o) in out.iter_mut().enumerate() {
        *o = *v.get(i)?;
    }
    Some(out)
}

fn meminfo(text: &str) -> BTreeMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, rest) = l.split_once(':')?;
            let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
            Some((k, kb * 1024))
        })
        .collect()
}

impl HostMetrics {
    /// Reads under `root` (`/` on the host, `/hostfs` in a container).
    pub fn new(root: PathBuf) -> Self {
        HostMetrics {
            root,
            start_ns: unix_ns(),
            prev_cpu: None,
        }
    }

    /// One collection; missing files leave their metrics out.
    pub fn collect(&mut self) -> Vec<Metric> {
        let mut b = Builder {
            now: unix_ns(),
            start: self.start_ns,
            ..Default::default()
        };
        let root = self.root.clone();
        if let Some(ticks) = read(&root, "proc/stat").as_deref().and_then(cpu_ticks) {
            let pts = CPU_MODES
                .iter()
                .zip(ticks)
                .map(|(m, t)| (attrs(&[("cpu.mode", m)]), AsDouble(t as f64 / USER_HZ)))
                .collect();
            b.sum("system.cpu.time", "s", true, pts);
            if let Some(prev) = self.prev_cpu {
                let d: Vec<u64> = ticks
                    .iter()
                    .zip(prev)
                    .map(|(a, b)| a.saturating_sub(b))
                    .collect();
                let total: u64 = d.iter().sum();
                if total > 0 {
                    let pts = CPU_MODES
                        .iter()
                        .zip(&d)
                        .map(|(m, x)| {
                            (
                                attrs(&[("cpu.mode", m)]),
                                AsDouble(*x as f64 / total as f64),
                            )
                        })
                        .collect();
                    b.gauge("system.cpu.utilization", "1", pts);
                }
            }
            self.prev_cpu = Some(ticks);
        }
        if let Some(text) = read(&root, "proc/meminfo") {
            let m = meminfo(&text);
            if let (Some(total), Some(free)) = (m.get("MemTotal"), m.get("MemFree")) {
                let buffers = m.get("Buffers").copied().unwrap_or(0);
                let cached = m.get("Cached").copied().unwrap_or(0)
                    + m.get("SReclaimable").copied().unwrap_or(0);
                let used = total.saturating_sub(free + buffers + cached);
                let pts = [
                    ("used", used),
                    ("free", *free),
                    ("buffers", buffers),
                    ("cached", cached),
                ]
                .iter()
                .map(|(s, v)| (attrs(&[("system.memory.state", s)]), AsInt(*v as i64)))
                .collect();
                b.sum("system.memory.usage", "By", false, pts);
            }
        }
        if let Some(text) = read(&root, "proc/loadavg") {
            let v: Vec<f64> = text
                .split_whitespace()
                .take(3)
                .filter_map(|x| x.parse().ok())
                .collect();
            if v.len() == 3 {
                for (name, x) in [
                    "system.cpu.load_average.1m",
                    "system.cpu.load_average.5m",
                    "system.cpu.load_average.15m",
                ]
                .iter()
                .zip(v)
                {
                    b.gauge(name, "{thread}", vec![(Vec::new(), AsDouble(x))]);
                }
            }
        }
        self.filesystems(&mut b);
        if let Some(text) = read(&root, "proc/diskstats") {
            let mut pts = Vec::new();
            for l in text.lines() {
                let f: Vec<&str> = l.split_whitespace().collect();
                if f.len() < 10 || f[2].starts_with("loop") || f[2].starts_with("ram") {
                    continue;
                }
                let (Ok(rd), Ok(wr)) = (f[5].parse::<u64>(), f[9].parse::<u64>()) else {
                    continue;
                };
                pts.push((
                    attrs(&[("system.device", f[2]), ("disk.io.direction", "read")]),
                    AsInt((rd * 512) as i64),
                ));
                pts.push((
                    attrs(&[("system.device", f[2]), ("disk.io.direction", "write")]),
                    AsInt((wr * 512) as i64),
                ));
            }
            b.sum("system.disk.io", "By", true, pts);
        }
        if let Some(text) = read(&root, "proc/net/dev") {
            let mut pts = Vec::new();
            for l in text.lines().skip(2) {
                let Some((name, rest)) = l.split_once(':') else {
                    continue;
                };
                let f: Vec<u64> = rest
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                if f.len() < 9 {
                    continue;
                }
                let name = name.trim();
                pts.push((
                    attrs(&[
                        ("network.interface.name", name),
                        ("network.io.direction", "receive"),
                    ]),
                    AsInt(f[0] as i64),
                ));
                pts.push((
                    attrs(&[
                        ("network.interface.name", name),
                        ("network.io.direction", "transmit"),
                    ]),
                    AsInt(f[8] as i64),
                ));
            }
            b.sum("system.network.io", "By", true, pts);
        }
        b.metrics
    }

    fn filesystems(&self, b: &mut Builder) {
        let Some(text) = read(&self.root, "proc/mounts") else {
            return;
        };
        let mut pts = Vec::new();
        let mut seen = Vec::new();
        for l in text.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 3 || !FS_TYPES.contains(&f[2]) || seen.contains(&f[0]) {
                continue;
            }
            seen.push(f[0]);
            let mount = self.root.join(f[1].trim_start_matches('/'));
            let Ok(st) = rustix::fs::statvfs(&mount) else {
                continue;
            };
            let bs = st.f_frsize.max(1);
            let free = st.f_bavail * bs;
            let reserved = st.f_bfree.saturating_sub(st.f_bavail) * bs;
            let used = st.f_blocks.saturating_sub(st.f_bfree) * bs;
            for (state, v) in [("used", used), ("free", free), ("reserved", reserved)] {
                pts.push((
                    attrs(&[
                        ("system.device", f[0]),
                        ("system.filesystem.mountpoint", f[1]),
                        ("system.filesystem.type", f[2]),
                        ("system.filesystem.state", state),
                    ]),
                    AsInt(v as i64),
                ));
            }
        }
        b.sum("system.filesystem.usage", "By", false, pts);
    }
}

/// An OTLP request of the metrics with the node's resource.
pub fn request(metrics: Vec<Metric>, node: &str) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv_str("host.name", node),
                    kv_str("k8s.node.name", node),
                    kv_str("service.name", "periscope-agent"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "periscope-agent/hostmetrics".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Collects every `interval` and hands the request to the exporter. A
/// collection finding the queue full is skipped (metrics are samples; the
/// next one carries the cumulative values).
pub async fn run(
    root: PathBuf,
    node: String,
    interval: Duration,
    tx: SyncSender<Batch>,
    stats: Arc<Stats>,
) {
    let mut hm = HostMetrics::new(root);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let metrics = hm.collect();
        if metrics.is_empty() {
            continue;
        }
        Stats::add(&stats.host_metric_scrapes, 1);
        let req = request(metrics, &node);
        let bytes = prost::Message::encoded_len(&req);
        match tx.try_send(Batch {
            payload: Payload::Metrics(req),
            marks: Vec::new(),
            tenant: None,
            bytes,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                tracing::warn!("export queue full; host metrics collection skipped")
            }
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_proc_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("proc/net")).unwrap();
        std::fs::write(
            root.join("proc/stat"),
            "cpu  100 0 50 800 10 0 5 0 0 0\ncpu0 100 0 50 800 10 0 5 0 0 0\n",
        )
        .unwrap();
        std::fs::write(
            root.join("proc/meminfo"),
            "MemTotal: 1000 kB\nMemFree: 400 kB\nBuffers: 100 kB\nCached: 200 kB\n",
        )
        .unwrap();
        std::fs::write(root.join("proc/loadavg"), "0.50 0.25 0.10 1/100 42\n").unwrap();
        std::fs::write(root.join("proc/diskstats"), "   8       0 sda 10 0 2048 5 20 0 4096 7 0 0 0\n   7       0 loop0 1 0 8 0 0 0 0 0 0 0 0\n").unwrap();
        std::fs::write(
            root.join("proc/net/dev"),
            "Inter-|   Receive\n face |bytes\n  eth0: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0\n",
        )
        .unwrap();
        let mut hm = HostMetrics::new(root.to_owned());
        let first = hm.collect();
        let names: Vec<&str> = first.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "system.cpu.time",
                "system.memory.usage",
                "system.cpu.load_average.1m",
                "system.cpu.load_average.5m",
                "system.cpu.load_average.15m",
                "system.disk.io",
                "system.network.io"
            ]
        );
        let Some(metric::Data::Sum(cpu)) = &first[0].data else {
            panic!()
        };
        assert_eq!(cpu.data_points[0].value, Some(AsDouble(1.0)));
        let Some(metric::Data::Sum(mem)) = &first[1].data else {
            panic!()
        };
        assert_eq!(
            mem.data_points[0].value,
            Some(AsInt(300 * 1024)),
            "used = total - free - buffers - cached"
        );
        let Some(metric::Data::Sum(disk)) = &first[5].data else {
            panic!()
        };
        assert_eq!(disk.data_points.len(), 2, "loop devices skipped");
        assert_eq!(disk.data_points[1].value, Some(AsInt(4096 * 512)));
        std::fs::write(root.join("proc/stat"), "cpu  200 0 50 900 10 0 5 0 0 0\n").unwrap();
        let second = hm.collect();
        let util = second
            .iter()
            .find(|m| m.name == "system.cpu.utilization")
            .unwrap();
        let Some(metric::Data::Gauge(g)) = &util.data else {
            panic!()
        };
        assert_eq!(
            g.data_points[0].value,
            Some(AsDouble(0.5)),
            "user share of the interval"
        );
    }
}

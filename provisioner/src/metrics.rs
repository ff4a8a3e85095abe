//! `/metrics` in the Prometheus text exposition format (version 0.0.4): counters
//! and duration sums from every service, rendered from a snapshot. Pure render.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::dhcp::server::DhcpStats;
use crate::tftp::server::TftpStats;

/// HTTP counters, by route class.
#[derive(Debug, Default)]
pub struct HttpStats {
    pub scripts: AtomicU64,
    pub assets: AtomicU64,
    pub partial: AtomicU64,
    pub not_found: AtomicU64,
    pub bad_request: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Sum of request handling times (to first byte), microseconds.
    pub duration_us: AtomicU64,
    pub requests: AtomicU64,
    /// Boot-file bodies being sent now, and GETs waiting for one of the
    /// `max_streams` slots (gauges).
    pub streams: AtomicU64,
    pub waiting: AtomicU64,
    /// GETs that had to wait, and the time they waited, microseconds.
    pub waited: AtomicU64,
    pub wait_us: AtomicU64,
}

/// Every service's counters, for one scrape.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    pub dhcp: Option<Arc<DhcpStats>>,
    pub tftp: Option<Arc<TftpStats>>,
    pub http: Arc<HttpStats>,
    pub enroll: Option<Arc<crate::enroll::Authority>>,
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

/// A Prometheus summary without quantiles: a sum of microseconds, in seconds, and a count.
fn summary(out: &mut String, name: &str, help: &str, sum_us: u64, count: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} summary\n{name}_sum {:.6}\n{name}_count {count}",
        sum_us as f64 / 1e6
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

fn labelled(out: &mut String, name: &str, help: &str, label: &str, values: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (v, n) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{v}\"}} {n}");
    }
}

impl Registry {
    pub fn render(&self) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::with_capacity(4096);
        if let Some(a) = &self.enroll {
            let e = a.stats();
            labelled(
                &mut out,
                "provisioner_enroll_requests_total",
                "Enroll calls, by outcome.",
                "outcome",
                &[
                    ("enrolled", get(&e.enrollments)),
                    ("poll", get(&e.polls)),
                    ("refused", get(&e.refused)),
                    ("rate_limited", get(&e.rate_limited)),
                ],
            );
            counter(
                &mut out,
                "provisioner_enroll_certificates_issued_total",
                "Node certificates issued (enrollments and renewals).",
                get(&e.certificates_issued),
            );
            counter(
                &mut out,
                "provisioner_enroll_renewals_total",
                "Certificates renewed.",
                get(&e.renewals),
            );
            counter(
                &mut out,
                "provisioner_enroll_health_reports_total",
                "Health reports stored.",
                get(&e.health_reports),
            );
            counter(
                &mut out,
                "provisioner_enroll_tls_handshake_failures_total",
                "Enrollment TLS handshakes refused or timed out.",
                get(&e.handshake_failures),
            );
            let _ = writeln!(
                out,
                "# HELP provisioner_nodes Nodes by lifecycle state.\n# TYPE provisioner_nodes gauge"
            );
            for (state, n) in a.state_counts() {
                let _ = writeln!(out, "provisioner_nodes{{state=\"{state}\"}} {n}");
            }
        }
        if let Some(d) = &self.dhcp {
            counter(
                &mut out,
                "provisioner_dhcp_received_total",
                "DHCP datagrams received.",
                get(&d.received),
            );
            labelled(
                &mut out,
                "provisioner_dhcp_dropped_total",
                "DHCP datagrams dropped before a decision.",
                "reason",
                &[
                    ("malformed", get(&d.malformed)),
                    ("foreign_interface", get(&d.foreign_interface)),
                    ("queue_full", get(&d.queue_full)),
                    ("paced", get(&d.paced)),
                ],
            );
            counter(
                &mut out,
                "provisioner_dhcp_ignored_total",
                "Requests answered with silence (by rule).",
                get(&d.ignored),
            );
            counter(
                &mut out,
                "provisioner_dhcp_replies_total",
                "DHCP replies sent.",
                get(&d.replies),
            );
            counter(
                &mut out,
                "provisioner_dhcp_commits_total",
                "Lease store commits.",
                get(&d.commits),
            );
            counter(
                &mut out,
                "provisioner_dhcp_commit_failures_total",
                "Failed lease commits (replies withheld).",
                get(&d.commit_failures),
            );
        }
        if let Some(t) = &self.tftp {
            counter(
                &mut out,
                "provisioner_tftp_requests_total",
                "TFTP requests received.",
                get(&t.requests),
            );
            counter(
                &mut out,
                "provisioner_tftp_refused_total",
                "TFTP requests refused (not found, write, limits).",
                get(&t.refused),
            );
            labelled(
                &mut out,
                "provisioner_tftp_transfers_total",
                "TFTP transfers finished.",
                "result",
                &[
                    ("done", get(&t.transfers_done)),
                    ("failed", get(&t.transfers_failed)),
                ],
            );
            counter(
                &mut out,
                "provisioner_tftp_bytes_sent_total",
                "TFTP payload bytes sent.",
                get(&t.bytes_sent),
            );
            counter(
                &mut out,
                "provisioner_tftp_packets_sent_total",
                "TFTP DATA packets sent (incl. retransmissions).",
                get(&t.packets_sent),
            );
            summary(
                &mut out,
                "provisioner_tftp_transfer_seconds",
                "Time spent in finished TFTP transfers.",
                get(&t.duration_us),
                get(&t.transfers_done) + get(&t.transfers_failed),
            );
            gauge(
                &mut out,
                "provisioner_tftp_transfers_running",
                "TFTP transfers running now.",
                get(&t.running),
            );
            gauge(
                &mut out,
                "provisioner_tftp_queue_depth",
                "TFTP requests waiting for a transfer slot now.",
                get(&t.waiting),
            );
            labelled(
                &mut out,
                "provisioner_tftp_queue_total",
                "TFTP requests that waited for a slot, and those dropped after max_wait.",
                "outcome",
                &[("queued", get(&t.queued)), ("expired", get(&t.expired))],
            );
            counter(
                &mut out,
                "provisioner_tftp_duplicate_requests_total",
                "Retransmitted read requests of a transfer already running or waiting.",
                get(&t.duplicates),
            );
            summary(
                &mut out,
                "provisioner_tftp_queue_wait_seconds",
                "Time queued requests waited for a slot.",
                get(&t.wait_us),
                get(&t.waited),
            );
        }
        let h = &self.http;
        labelled(
            &mut out,
            "provisioner_http_responses_total",
            "HTTP responses by kind.",
            "kind",
            &[
                ("script", get(&h.scripts)),
                ("asset", get(&h.assets)),
                ("partial", get(&h.partial)),
                ("not_found", get(&h.not_found)),
                ("bad_request", get(&h.bad_request)),
            ],
        );
        counter(
            &mut out,
            "provisioner_http_bytes_sent_total",
            "HTTP body bytes sent for assets.",
            get(&h.bytes_sent),
        );
        gauge(
            &mut out,
            "provisioner_http_streams_active",
            "Boot-file bodies being sent now (at most http.max_streams).",
            get(&h.streams),
        );
        gauge(
            &mut out,
            "provisioner_http_streams_waiting",
            "Boot-file GETs waiting for a stream slot now.",
            get(&h.waiting),
        );
        summary(
            &mut out,
            "provisioner_http_stream_wait_seconds",
            "Time boot-file GETs waited for a stream slot.",
            get(&h.wait_us),
            get(&h.waited),
        );
        summary(
            &mut out,
            "provisioner_http_request_seconds",
            "Time to build HTTP responses (to first byte).",
            get(&h.duration_us),
            get(&h.requests),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_format_is_well_formed() {
        let reg = Registry {
            dhcp: Some(Arc::default()),
            tftp: Some(Arc::default()),
            http: Arc::default(),
            enroll: None,
        };
        if let Some(d) = &reg.dhcp {
            d.replies.store(7, Ordering::Relaxed);
        }
        let text = reg.render();
        assert!(text.contains("provisioner_dhcp_replies_total 7\n"));
        assert!(text.contains("provisioner_tftp_transfers_total{result=\"done\"} 0\n"));
        for line in text.lines() {
            if line.starts_with('#') {
                assert!(
                    line.starts_with("# HELP ") || line.starts_with("# TYPE "),
                    "{line}"
                );
            } else {
                let (name, value) = line.rsplit_once(' ').expect("metric line");
                assert!(name.starts_with("provisioner_"), "{line}");
                assert!(value.parse::<f64>().is_ok(), "{line}");
            }
        }
    }
}

//! `uname`: `node_uname_info{sysname,release,version,machine,nodename,domainname}` from
//! the `uname(2)` system call (live, as in node_exporter; no file to read).

use std::ffi::OsStr;

use super::{CollectError, Collector, CollectorSpec};
use crate::metrics::MetricSink;

/// Calls `uname`.
#[derive(Debug, Default)]
pub struct UnameCollector;

impl UnameCollector {
    /// A new collector.
    pub fn new() -> Self {
        Self
    }
}

/// The `uname` collector.
pub const SPEC: CollectorSpec =
    CollectorSpec::system("uname", |_| Ok(Box::new(UnameCollector::new())));

impl Collector for UnameCollector {
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
        let uts = nix::sys::utsname::uname()
            .map_err(|errno| CollectError::Other(format!("uname failed: {errno}")))?;
        // The hostname can change at run time, so nothing is cached.
        let text = |s: &OsStr| s.to_string_lossy().into_owned();
        write_uname(
            out,
            &UnameInfo {
                sysname: text(uts.sysname()),
                release: text(uts.release()),
                version: text(uts.version()),
                machine: text(uts.machine()),
                nodename: text(uts.nodename()),
                domainname: text(uts.domainname()),
            },
        );
        Ok(())
    }
}

/// The `uname` strings node_exporter labels its info family with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnameInfo {
    /// `Linux`.
    pub sysname: String,
    /// Kernel release, `6.1.0-rpi7-rpi-v8`.
    pub release: String,
    /// Kernel build, `#1 SMP PREEMPT Debian 1:6.1.63-1+rpt1 (2023-11-24)`.
    pub version: String,
    /// Hardware, `aarch64`.
    pub machine: String,
    /// Hostname.
    pub nodename: String,
    /// NIS domain name, `(none)` when unset.
    pub domainname: String,
}

/// Writes `node_uname_info` for `info`.
pub fn write_uname(out: &mut MetricSink, info: &UnameInfo) {
    out.gauge(
        "node_uname_info",
        "Labeled system information as provided by the uname system call.",
        &[
            ("sysname", &info.sysname),
            ("release", &info.release),
            ("version", &info.version),
            ("machine", &info.machine),
            ("nodename", &info.nodename),
            ("domainname", &info.domainname),
        ],
        1.0,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::*;

    #[test]
    fn renders_like_node_exporter() {
        let mut sink = MetricSink::new();
        write_uname(
            &mut sink,
            &UnameInfo {
                sysname: "Linux".into(),
                release: "6.18.44-fc-v669".into(),
                version: "#1 SMP PREEMPT_DYNAMIC @0".into(),
                machine: "x86_64".into(),
                nodename: "vm".into(),
                domainname: "(none)".into(),
            },
        );
        let mut out = Vec::new();
        nodewatch_http::encode_families(&sink.into_families(), &mut out).expect("encode");
        // node_exporter 1.5's output on this machine, byte for byte.
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "# HELP node_uname_info Labeled system information as provided by the uname system call.\n\
             # TYPE node_uname_info gauge\n\
             node_uname_info{domainname=\"(none)\",machine=\"x86_64\",nodename=\"vm\",release=\"6.18.44-fc-v669\",sysname=\"Linux\",version=\"#1 SMP PREEMPT_DYNAMIC @0\"} 1\n"
        );
    }

    #[test]
    fn live_call_has_the_six_labels() {
        // uname is live: check the shape, not the values.
        let text = collect_text(&UnameCollector::new());
        let sample = text
            .lines()
            .find(|l| l.starts_with("node_uname_info{"))
            .expect("sample");
        for label in [
            "domainname=",
            "machine=",
            "nodename=",
            "release=",
            "sysname=\"Linux\"",
            "version=",
        ] {
            assert!(sample.contains(label), "{sample}");
        }
        assert!(sample.ends_with("} 1"));
    }
}

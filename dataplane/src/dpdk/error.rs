use std::ffi::CStr;

/// Errors of the DPDK layer. Each names the object and the call that failed
/// and carries DPDK's errno with its text.
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    #[error("EAL already initialised in this process (rte_eal_init works once per process)")]
    AlreadyInitialized,
    #[error("EAL init failed: {reason} (rte_errno {errno}){}", log_hint(.log))]
    EalInit {
        errno: i32,
        reason: String,
        /// DPDK's log during init.
        log: String,
    },
    #[error("EAL argument {0:?} contains a NUL byte")]
    BadArgument(String),
    #[error("mempool {name}: create failed: {reason} (rte_errno {errno})")]
    Mempool {
        name: String,
        errno: i32,
        reason: String,
    },
    #[error("{name}: create failed: {reason} (rte_errno {errno})")]
    Create {
        name: String,
        errno: i32,
        reason: String,
    },
    #[error("{name} did not probe{}", log_hint(.cause))]
    PortNotFound {
        name: String,
        /// The driver's own words, from the EAL log, if it said anything.
        cause: String,
    },
    #[error("port {name}: {op} failed: {reason} (errno {errno})")]
    Port {
        name: String,
        op: &'static str,
        errno: i32,
        reason: String,
    },
    #[error("port {name}: {what}")]
    PortLimit { name: String, what: String },
    #[error("lcore {lcore}: {what}")]
    Lcore { lcore: u32, what: String },
}

/// DPDK's text for an errno value (positive or negative).
pub(crate) fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror accepts any int and returns a pointer to a static
    // or thread-local NUL-terminated string that stays valid until the next
    // call on this thread; we copy it out at once.
    unsafe {
        let p = dpdk_sys::rte_strerror(errno.abs());
        if p.is_null() {
            return format!("errno {errno}");
        }
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// The calling thread's `rte_errno`.
pub(crate) fn rte_errno() -> i32 {
    // SAFETY: reads a per-thread integer; no preconditions.
    unsafe { dpdk_sys::hdvrf_rte_errno() }
}

/// The last lines of a DPDK log, joined for a one-line message.
fn log_hint(log: &str) -> String {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter(|l| !l.starts_with("EAL: Detected") && !l.starts_with("TELEMETRY:"))
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = &lines[lines.len().saturating_sub(2)..];
    format!(": {}", tail.join(" / "))
}

/// The lines of an EAL init log that explain why device `name` is missing:
/// the driver's message just before "failed to initialize NAME" and that
/// line itself.
pub(crate) fn probe_failure(log: &str, name: &str) -> String {
    let lines: Vec<&str> = log.lines().map(str::trim).collect();
    let needle = format!("failed to initialize {name} ");
    if let Some(i) = lines
        .iter()
        .position(|l| l.contains(&needle) || l.ends_with(&format!("failed to initialize {name}")))
    {
        let from = i.saturating_sub(1);
        return lines[from..=i].join("\n");
    }
    lines
        .iter()
        .filter(|l| l.contains(name))
        .copied()
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "EAL: Detected CPU lcores: 2\nEAL: Selected IOVA mode 'VA'\nopen_single_rx_pcap(): Couldn't open /x.pcap: No such file or directory\nvdev_probe(): failed to initialize net_pcap0 device\nEAL: Bus (vdev) probe failed.\n";

    #[test]
    fn probe_failure_finds_the_drivers_words() {
        let c = probe_failure(LOG, "net_pcap0");
        assert_eq!(
            c,
            "open_single_rx_pcap(): Couldn't open /x.pcap: No such file or directory\nvdev_probe(): failed to initialize net_pcap0 device"
        );
        assert_eq!(probe_failure(LOG, "net_tap0"), "");
    }

    #[test]
    fn port_not_found_is_one_line() {
        let e = DpdkError::PortNotFound {
            name: "net_pcap0".into(),
            cause: probe_failure(LOG, "net_pcap0"),
        };
        let s = e.to_string();
        assert!(!s.contains('\n'), "{s}");
        assert!(
            s.starts_with("net_pcap0 did not probe: open_single_rx_pcap(): Couldn't open"),
            "{s}"
        );
    }
}

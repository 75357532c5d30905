//! EAL command line from the configuration: lcores, memory (hugepages or
//! `--no-huge`), devices, and isolation so several instances can run side
//! by side (tests, the demo topology).

use crate::config::{DeviceKind, Loaded};

/// Hugepage availability as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hugepages {
    pub mounted: bool,
    pub free_pages: u64,
}

impl Hugepages {
    /// Reads `/proc/mounts` and `/proc/meminfo`.
    pub fn probe() -> Hugepages {
        let mounted = std::fs::read_to_string("/proc/mounts")
            .map(|m| {
                m.lines()
                    .any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"))
            })
            .unwrap_or(false);
        let free_pages = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("HugePages_Free:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0);
        Hugepages {
            mounted,
            free_pages,
        }
    }

    pub fn usable(&self) -> bool {
        self.mounted && self.free_pages > 0
    }
}

/// Why no EAL command line could be made.
#[derive(Debug, thiserror::Error)]
pub enum EalArgsError {
    #[error("dataplane.hugepages = \"on\" but {0}")]
    NoHugepages(String),
}

/// DPDK's name for port `i`'s host tap device.
pub fn host_tap_device(i: usize) -> String {
    format!("net_tap_hd{i}")
}

fn is_router(loaded: &Loaded) -> bool {
    loaded.config.dataplane.forward_mode.get_ref() == "router"
}

/// Per port, its host tap (router mode, addressed ports).
pub fn host_specs(loaded: &Loaded) -> Vec<Option<dataplane::HostSpec>> {
    loaded
        .config
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let iface = p.host_iface_name().filter(|_| is_router(loaded))?;
            Some(dataplane::HostSpec {
                dpdk_name: host_tap_device(i),
                iface,
            })
        })
        .collect()
}

/// Builds the EAL arguments (without argv\[0\]).
pub fn build(loaded: &Loaded, huge: Hugepages) -> Result<Vec<String>, EalArgsError> {
    let dp = &loaded.config.dataplane;
    let mut a = Vec::new();
    let main = *dp.main_lcore.get_ref();
    match &dp.worker_cpus {
        // lcore@cpu for each thread.
        Some(cpus) => {
            a.push("--lcores".to_owned());
            a.push(
                std::iter::once((main, main))
                    .chain(
                        dp.workers
                            .get_ref()
                            .iter()
                            .copied()
                            .zip(cpus.get_ref().iter().copied()),
                    )
                    .map(|(l, c)| format!("{l}@{c}"))
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        None => {
            let mut lcores = vec![main];
            lcores.extend(dp.workers.get_ref().iter().copied());
            a.push("-l".to_owned());
            a.push(
                lcores
                    .iter()
                    .map(|l| l.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
    }
    a.push(format!("--main-lcore={}", dp.main_lcore.get_ref()));

    let use_huge = match dp.hugepages.get_ref().as_str() {
        "on" => {
            if !huge.mounted {
                return Err(EalArgsError::NoHugepages(
                    "no hugetlbfs is mounted (mount -t hugetlbfs nodev /dev/hugepages, or set hugepages = \"auto\")"
                        .into(),
                ));
            }
            if huge.free_pages == 0 {
                return Err(EalArgsError::NoHugepages(
                    "no free hugepages are reserved (echo 512 > /proc/sys/vm/nr_hugepages, or set hugepages = \"auto\")"
                        .into(),
                ));
            }
            true
        }
        "off" => false,
        _ => huge.usable(),
    };
    if use_huge {
        // No files in /var/run/dpdk and private memory: instances coexist.
        a.push("--in-memory".to_owned());
    } else {
        a.push("--no-huge".to_owned());
        a.push("--no-shconf".to_owned());
        a.push("-m".to_owned());
        a.push(dp.memory_mb.to_string());
    }
    let mut any_pci = false;
    for (p, d) in loaded.config.ports.iter().zip(&loaded.devices) {
        match d.kind {
            DeviceKind::Pci => {
                any_pci = true;
                a.push("-a".to_owned());
                a.push(p.device.get_ref().trim().to_owned());
            }
            DeviceKind::Vdev { .. } => a.push(format!("--vdev={}", p.device.get_ref().trim())),
        }
    }
    // Router mode: each addressed port's host tap (the host path).
    if is_router(loaded) {
        for (i, p) in loaded.config.ports.iter().enumerate() {
            if let Some(iface) = p.host_iface_name() {
                a.push(format!("--vdev={},iface={iface}", host_tap_device(i)));
            }
        }
    }
    if !any_pci {
        // Do not grab every NIC bound to vfio-pci on the box.
        a.push("--no-pci".to_owned());
    }
    a.extend(dp.eal_args.iter().cloned());
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn loaded(extra: &str, dev2: &str) -> Loaded {
        let src = format!(
            "[dataplane]\nworkers = [1]\n{extra}\n[[port]]\nname = \"a\"\ndevice = \"net_null0,no-rx=1\"\n[[port]]\nname = \"b\"\ndevice = \"{dev2}\"\n"
        );
        crate::config::parse(Path::new("t.toml"), &src).expect("valid")
    }

    const NONE: Hugepages = Hugepages {
        mounted: false,
        free_pages: 0,
    };
    const SOME: Hugepages = Hugepages {
        mounted: true,
        free_pages: 256,
    };

    #[test]
    fn auto_without_hugepages_falls_back_to_no_huge() {
        let a = build(&loaded("", "net_ring0"), NONE).unwrap();
        assert_eq!(
            a,
            [
                "-l",
                "0,1",
                "--main-lcore=0",
                "--no-huge",
                "--no-shconf",
                "-m",
                "512",
                "--vdev=net_null0,no-rx=1",
                "--vdev=net_ring0",
                "--no-pci"
            ]
        );
    }

    #[test]
    fn worker_cpus_map_lcores_onto_cpus() {
        let a = build(&loaded("worker_cpus = [0]", "net_ring0"), NONE).unwrap();
        assert_eq!(a[..3], ["--lcores", "0@0,1@0", "--main-lcore=0"]);
        assert!(!a.contains(&"-l".to_owned()));
    }

    #[test]
    fn auto_with_hugepages_uses_them_in_memory() {
        let a = build(&loaded("", "0000:01:00.0"), SOME).unwrap();
        assert!(a.contains(&"--in-memory".to_owned()));
        assert!(!a.contains(&"--no-huge".to_owned()));
        assert!(a.windows(2).any(|w| w == ["-a", "0000:01:00.0"]));
        assert!(!a.contains(&"--no-pci".to_owned()));
    }

    #[test]
    fn on_without_mount_is_an_error_naming_the_field() {
        let e = build(&loaded("hugepages = \"on\"", "net_ring0"), NONE).unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("dataplane.hugepages = \"on\" but no hugetlbfs is mounted"),
            "{s}"
        );
    }

    #[test]
    fn off_ignores_hugepages() {
        let a = build(&loaded("hugepages = \"off\"", "net_ring0"), SOME).unwrap();
        assert!(a.contains(&"--no-huge".to_owned()));
    }
}

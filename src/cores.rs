//! How many physical cores the engine may use: the default for `model.threads`.
//!
//! llama.cpp's generation speed is bound by memory bandwidth and collapses when its
//! threads outnumber the cores they run on; two hyper-threads of one core do not make two
//! cores. So the default is the number of distinct physical cores among the CPUs this
//! process may run on, never more than `available_parallelism` (which also honours a
//! cgroup CPU quota). Read before lock-down: Landlock hides /sys and /proc afterwards.

use std::collections::HashSet;

/// Physical cores available to this process (at least 1).
pub fn physical_cores() -> usize {
    let available = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let allowed = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .and_then(parse_cpu_list)
        });
    let Some(allowed) = allowed else {
        return available;
    };
    let mut cores = HashSet::new();
    for cpu in allowed {
        let read = |what: &str| {
            std::fs::read_to_string(format!("/sys/devices/system/cpu/cpu{cpu}/topology/{what}"))
                .ok()
                .map(|s| s.trim().to_string())
        };
        match (read("physical_package_id"), read("core_id")) {
            (Some(package), Some(core)) => {
                cores.insert((package, core));
            }
            // Topology unknown (some containers): count the CPU itself.
            _ => {
                cores.insert((String::from("cpu"), cpu.to_string()));
            }
        }
    }
    cores.len().clamp(1, available.max(1))
}

/// Parse a kernel CPU list such as "0-3,8,10-11". `None` if malformed.
pub fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    /// More CPUs than any machine has; bounds the work a malformed file can cause.
    const MAX_CPUS: u32 = 1 << 16;
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi): (u32, u32) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let n = part.trim().parse().ok()?;
                (n, n)
            }
        };
        if lo > hi || hi >= MAX_CPUS {
            return None;
        }
        out.extend(lo..=hi);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("\t0\n"), Some(vec![0]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
        assert_eq!(parse_cpu_list("0-4294967295"), None);
    }

    #[test]
    fn this_machine_has_at_least_one_core_and_no_more_than_its_cpus() {
        let n = physical_cores();
        assert!(n >= 1);
        assert!(n <= std::thread::available_parallelism().unwrap().get());
    }
}

//! A process's CPU time and memory, from /proc.

/// User plus system CPU seconds the process has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) closed by ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ")".
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    ticks as f64 / clock_ticks()
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`, ...).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_default()
}

/// Resident memory now, MiB.
pub fn rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmRSS") as f64 / 1024.0
}

/// The highest resident memory so far, MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmHWM") as f64 / 1024.0
}

/// Starts the peak (`VmHWM`) over from the resident memory now, so that a scenario's peak
/// is its own and not an earlier one's (what an earlier one left resident still counts).
pub fn reset_peak(pid: u32) -> Result<(), String> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .map_err(|e| format!("cannot reset the peak memory of process {pid}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_cpu() {
        let pid = std::process::id();
        let spin: u64 = (0..2_000_000u64).fold(0, |a, b| a.wrapping_add(b * b));
        assert!(spin > 0);
        assert!(rss_mib(pid) > 1.0);
        assert!(peak_rss_mib(pid) >= rss_mib(pid) - 1.0);
        assert!(cpu_seconds(pid) >= 0.0);
    }

    #[test]
    fn the_peak_starts_over_from_now() {
        let pid = std::process::id();
        let big = vec![1u8; 64 << 20];
        assert!(big.iter().map(|&b| u64::from(b)).sum::<u64>() > 0);
        drop(big);
        let high = peak_rss_mib(pid);
        reset_peak(pid).unwrap();
        assert!(
            peak_rss_mib(pid) < high - 32.0,
            "{} then {high}",
            peak_rss_mib(pid)
        );
    }
}

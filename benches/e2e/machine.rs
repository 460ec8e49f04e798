//! CPU time of processes and of the machine, from `/proc`, and the other work
//! that shares the machine with the benchmark.

use std::time::Duration;

/// Linux reports CPU times in USER_HZ, 100 on every architecture it exports.
const TICKS_PER_SEC: u64 = 100;

fn ticks(n: u64) -> Duration {
    Duration::from_millis(n * 1000 / TICKS_PER_SEC)
}

/// Fields 3 onwards of `/proc/<pid>/stat` (after the command name, which is
/// in parentheses and may hold spaces); empty when the process is gone.
fn stat_fields(pid: &str) -> Vec<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    rest.split_whitespace().map(str::to_string).collect()
}

/// Field `n` (1-based, as `man 5 proc` numbers them) of a stat line.
fn field(fields: &[String], n: usize) -> u64 {
    fields
        .get(n - 3)
        .and_then(|f| f.parse().ok())
        .unwrap_or_default()
}

/// RSS of a process in bytes, from /proc (0 when it cannot be read).
#[allow(dead_code)] // not every benchmark that uses this module measures memory
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// User plus system CPU time of a whole process (all threads) so far.
pub fn process_cpu(pid: u32) -> Duration {
    let fields = stat_fields(&pid.to_string());
    ticks(field(&fields, 14) + field(&fields, 15))
}

/// The same for this process.
pub fn own_cpu() -> Duration {
    let fields = stat_fields("self");
    ticks(field(&fields, 14) + field(&fields, 15))
}

/// CPU time all CPUs of the machine have spent busy since boot (`/proc/stat`).
pub fn machine_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = text.lines().next().unwrap_or_default();
    // cpu user nice system idle iowait irq softirq steal (guest time is in user)
    let busy: u64 = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, f)| f.parse::<u64>().unwrap_or(0))
        .sum();
    ticks(busy)
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Work on the machine that is not this benchmark's.
#[derive(Default)]
pub struct OtherWork {
    /// Other benchmarks (and servers they start): measuring beside them
    /// would disturb both.
    pub benchmarks: Vec<String>,
    /// Builds and test suites: noted with the figures.
    pub builds: Vec<String>,
}

/// Processes outside this benchmark's own tree (its ancestors and
/// descendants), by their first two command-line words: `pid command`, at
/// most 100 characters of it. Idle `redis-server`s of other suites are left
/// out.
pub fn other_work() -> OtherWork {
    let me = std::process::id();
    let ancestors = ancestors(me);
    let mut found = OtherWork::default();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if ancestors.contains(&pid) || ancestors_of(pid).contains(&me) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let cmdline = cmdline.trim();
        let words: Vec<&str> = cmdline.split(' ').collect();
        let head = words[..words.len().min(4)].join(" ");
        let shown = format!("{pid} {}", cmdline.chars().take(100).collect::<String>());
        let benchmark = (head.contains("cargo bench") && !cmdline.contains("--no-run"))
            || [
                "bench.sh",
                "target/release/deps/",
                "weft serve",
                "restate-server",
                "celery",
            ]
            .iter()
            .any(|w| head.contains(w));
        if benchmark {
            found.benchmarks.push(shown);
        } else if ["cargo", "rustc", "target/debug/deps/"]
            .iter()
            .any(|w| head.contains(w))
        {
            found.builds.push(shown);
        }
    }
    found
}

/// `pid` and its ancestors, up to pid 1.
fn ancestors(pid: u32) -> Vec<u32> {
    let mut chain = vec![pid];
    chain.extend(ancestors_of(pid));
    chain
}

fn ancestors_of(mut pid: u32) -> Vec<u32> {
    let mut chain = Vec::new();
    while pid > 1 {
        pid = field(&stat_fields(&pid.to_string()), 4) as u32;
        if pid == 0 || chain.contains(&pid) {
            break;
        }
        chain.push(pid);
    }
    chain
}

/// Runs `f`; returns what it returned and the machine's busy CPU time meanwhile.
pub fn busy_during<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let before = machine_cpu();
    let value = f();
    (value, machine_cpu().saturating_sub(before))
}

//! What the servers (and the tool itself) spent: CPU from /proc, peak RSS.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::{Instant, sleep};

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// utime + stime of a process, in seconds (/proc reports clock ticks of 1/100 s).
pub fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

pub fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU and peak RSS of the server processes and of this tool over a run.
pub struct Meter {
    pids: Vec<String>,
    cpu0: f64,
    own0: f64,
    started: Instant,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Meter {
    pub fn start(pids: &[u32]) -> Meter {
        let pids: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p2, s2, pids2) = (peak.clone(), stop.clone(), pids.clone());
        tokio::spawn(async move {
            while !s2.load(Ordering::Relaxed) {
                let rss: u64 = pids2.iter().map(|p| rss_kib(p)).sum();
                p2.fetch_max(rss, Ordering::Relaxed);
                sleep(Duration::from_millis(100)).await;
            }
        });
        Meter {
            cpu0: pids.iter().map(|p| cpu_seconds(p)).sum(),
            own0: cpu_seconds("self"),
            pids,
            started: Instant::now(),
            peak,
            stop,
        }
    }

    pub fn finish(&self) -> (f64, f64, f64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let cpu: f64 = self.pids.iter().map(|p| cpu_seconds(p)).sum::<f64>() - self.cpu0;
        let own = cpu_seconds("self") - self.own0;
        (
            cpu,
            own,
            self.started.elapsed().as_secs_f64(),
            self.peak.load(Ordering::Relaxed),
        )
    }
}

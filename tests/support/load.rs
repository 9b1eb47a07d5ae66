//! Sequence-numbered traffic for the cluster tests: publishers record what the
//! broker acknowledged, subscribers record what they received, and [`Report`]
//! compares the two per subscriber, per channel, per publisher.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Client, Received};

/// (publisher, seq) acknowledged at `at`.
#[derive(Debug, Clone)]
pub struct Acked {
    pub channel: String,
    pub seq: u64,
    pub at: Instant,
}

pub struct Publisher {
    pub name: String,
    task: JoinHandle<Vec<Acked>>,
}

/// One message as a subscriber received it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub channel: String,
    pub publisher: String,
    pub seq: u64,
    pub offset: Option<u64>,
    pub at: Instant,
}

pub struct Subscriber {
    pub name: String,
    task: JoinHandle<Vec<Delivery>>,
}

pub struct Load {
    stop: Arc<AtomicBool>,
    publishers: Vec<Publisher>,
    subscribers: Vec<Subscriber>,
    pub started: Instant,
}

impl Load {
    pub fn new() -> Load {
        Load {
            stop: Arc::new(AtomicBool::new(false)),
            publishers: Vec::new(),
            subscribers: Vec::new(),
            started: Instant::now(),
        }
    }

    /// A subscriber on `instance`, subscribed to `channels` before this returns.
    pub async fn subscriber(&mut self, instance: SocketAddr, name: &str, channels: &[String]) {
        let mut c = Client::connect(&format!("ws://{instance}/ws?user={name}")).await;
        for (i, ch) in channels.iter().enumerate() {
            c.subscribe(ch, i as u64).await;
        }
        let stop = self.stop.clone();
        let task = tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let wait = if stop.load(Ordering::Relaxed) {
                    Duration::from_secs(2)
                } else {
                    Duration::from_millis(200)
                };
                match c.next_event(wait).await {
                    Some(Received::Frame(f)) if f["op"] == "message" => got.push(Delivery {
                        channel: f["channel"].as_str().unwrap_or_default().to_string(),
                        publisher: f["data"]["p"].as_str().unwrap_or_default().to_string(),
                        seq: f["data"]["n"].as_u64().unwrap_or(u64::MAX),
                        offset: f["offset"].as_u64(),
                        at: Instant::now(),
                    }),
                    Some(Received::Frame(_)) => {}
                    Some(Received::Closed(code)) => panic!("subscriber closed: {code:?}"),
                    None if stop.load(Ordering::Relaxed) => break,
                    None => {}
                }
            }
            got
        });
        self.subscribers.push(Subscriber {
            name: name.to_string(),
            task,
        });
    }

    /// A publisher on `instance` cycling over `channels`, one publish every `every`,
    /// each awaiting its ack (errors are recorded as not acknowledged).
    pub async fn publisher(
        &mut self,
        instance: SocketAddr,
        name: &str,
        channels: Vec<String>,
        every: Duration,
    ) {
        let mut c = Client::connect(&format!("ws://{instance}/ws?user={name}")).await;
        let stop = self.stop.clone();
        let pname = name.to_string();
        let task = tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut seq = 0u64;
            let mut tick = tokio::time::interval(every);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let ch = &channels[seq as usize % channels.len()];
                let r = c
                    .request(
                        json!({"op":"publish","channel":ch,"data":{"p":pname,"n":seq}}),
                        seq,
                    )
                    .await;
                if r["op"] == "ok" {
                    acked.push(Acked {
                        channel: ch.clone(),
                        seq,
                        at: Instant::now(),
                    });
                }
                seq += 1;
            }
            acked
        });
        self.publishers.push(Publisher {
            name: name.to_string(),
            task,
        });
    }

    /// `per_instance` subscribers and one publisher on every instance, all on
    /// `channels`, publishing every `every` for `run`; returns the comparison.
    pub async fn all_to_all(
        instances: &[SocketAddr],
        channels: &[String],
        per_instance: usize,
        every: Duration,
        run: Duration,
    ) -> Report {
        let mut load = Load::new();
        for (i, addr) in instances.iter().enumerate() {
            for j in 0..per_instance {
                load.subscriber(*addr, &format!("s{i}{j}"), channels).await;
            }
        }
        for (i, addr) in instances.iter().enumerate() {
            load.publisher(*addr, &format!("p{i}"), channels.to_vec(), every)
                .await;
        }
        tokio::time::sleep(run).await;
        load.finish().await
    }

    /// Stops publishing, lets deliveries drain, and compares.
    pub async fn finish(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let mut acked = HashMap::new();
        for p in self.publishers {
            acked.insert(p.name.clone(), p.task.await.expect("publisher task"));
        }
        let mut received = BTreeMap::new();
        for s in self.subscribers {
            received.insert(s.name.clone(), s.task.await.expect("subscriber task"));
        }
        Report { acked, received }
    }
}

impl Default for Load {
    fn default() -> Self {
        Self::new()
    }
}

pub struct Report {
    pub acked: HashMap<String, Vec<Acked>>,
    /// subscriber -> what it received, in arrival order
    pub received: BTreeMap<String, Vec<Delivery>>,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub expected: usize,
    pub delivered: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub out_of_order: usize,
    /// Acknowledged at or after `after` and not delivered.
    pub lost_after: usize,
    /// A few out-of-order pairs, for the failure message.
    pub disorder: Vec<String>,
    /// History channels: places where a subscriber's offsets did not go up by one.
    pub offset_gaps: usize,
}

impl Report {
    /// Checks every subscriber against the acknowledged publications on the channels
    /// it subscribed (`wants(subscriber, channel)`). `after`: count losses of
    /// publications acknowledged from then on separately.
    pub fn outcome(&self, wants: impl Fn(&str, &str) -> bool, after: Option<Instant>) -> Outcome {
        let mut o = Outcome::default();
        for (sub, got) in &self.received {
            // (publisher, channel) -> seqs in arrival order
            let mut seen: HashMap<(&str, &str), Vec<u64>> = HashMap::new();
            let mut offsets: HashMap<&str, Vec<u64>> = HashMap::new();
            for d in got {
                seen.entry((d.publisher.as_str(), d.channel.as_str()))
                    .or_default()
                    .push(d.seq);
                if let Some(o) = d.offset
                    && wants(sub, &d.channel)
                {
                    offsets.entry(d.channel.as_str()).or_default().push(o);
                }
            }
            for (channel, list) in &offsets {
                for w in list.windows(2).filter(|w| w[1] != w[0] + 1) {
                    o.offset_gaps += 1;
                    if o.disorder.len() < 5 {
                        o.disorder.push(format!(
                            "{sub}: offsets on {channel}: {} after {}",
                            w[1], w[0]
                        ));
                    }
                }
            }
            for (publisher, acks) in &self.acked {
                for a in acks.iter().filter(|a| wants(sub, &a.channel)) {
                    o.expected += 1;
                    let list = seen.get(&(publisher.as_str(), a.channel.as_str()));
                    let count = list.map_or(0, |l| l.iter().filter(|n| **n == a.seq).count());
                    if count == 0 {
                        o.lost += 1;
                        if after.is_some_and(|t| a.at >= t) {
                            o.lost_after += 1;
                        }
                    } else {
                        o.delivered += 1;
                    }
                }
            }
            // Duplicates and order over everything received on wanted channels,
            // acknowledged or not (a publish that timed out must not arrive twice either).
            seen.retain(|(_, channel), _| wants(sub, channel));
            for list in seen.values() {
                let mut unique = list.clone();
                unique.sort_unstable();
                unique.dedup();
                o.duplicated += list.len() - unique.len();
            }
            for ((publisher, channel), list) in &seen {
                for w in list.windows(2).filter(|w| w[1] < w[0]) {
                    o.out_of_order += 1;
                    if o.disorder.len() < 5 {
                        o.disorder.push(format!(
                            "{sub}: {publisher} on {channel}: {} after {}",
                            w[1], w[0]
                        ));
                    }
                }
            }
        }
        o
    }
}

//! Sequence-numbered traffic and its accounting: publishers record what the server
//! acknowledged, subscribers record what they received, and [`Report::outcome`]
//! compares the two per subscriber, per channel, per publisher — lost, duplicated,
//! out of order, offset gaps — overall and for what was acknowledged after an event.
//!
//! Every publication's `data` is `{"p":<publisher>,"n":<seq>}`. A delivery that is
//! not of that shape counts as malformed; on history channels a delivery without an
//! offset is counted too, so a check cannot pass by not looking.
//!
//! ```no_run
//! # async fn demo(a: &shardcast_testkit::Shardcast, b: &shardcast_testkit::Shardcast,
//! #               cluster: &mut shardcast_testkit::RedisCluster) {
//! use std::time::Duration;
//! use shardcast_testkit::Load;
//!
//! // `a` and `b` run with `--insecure --client-publish authenticated` and
//! // `--history orders:100000:600s`: history channels are the ones shardcast
//! // promises to deliver without loss through a failover.
//! let channels: Vec<String> = (0..4).map(|i| format!("orders:{i}")).collect();
//! let mut load = Load::new();
//! load.subscriber(&a.ws_url("?user=s"), "s", &channels).await;
//! load.publisher(&b.ws_url("?user=p"), "p", channels.clone(), Duration::from_millis(5))
//!     .await;
//! tokio::time::sleep(Duration::from_secs(1)).await;
//! let fault = tokio::time::Instant::now();
//! cluster.kill_primary_of(&channels[0]).await.expect("failover");
//! tokio::time::sleep(Duration::from_secs(2)).await;
//! let o = load.finish().await.outcome(|_| true, Some(fault));
//! assert_eq!((o.lost, o.duplicated, o.out_of_order), (0, 0, 0), "{o:?}");
//! # }
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::{Client, Received};

/// A subscriber that heard nothing for this long after publishing stopped has
/// received everything it is going to.
const QUIET: Duration = Duration::from_secs(5);
/// The longest a subscriber drains after publishing stopped.
const DRAIN_CAP: Duration = Duration::from_secs(60);

/// A publication the server acknowledged (answered `ok`).
#[derive(Debug, Clone)]
pub struct Acked {
    /// The channel it was published on.
    pub channel: String,
    /// Its sequence number: the publisher's count of publishes so far, failed ones
    /// included (so the numbers of one publisher are unique, not gapless).
    pub seq: u64,
    /// When the answer arrived.
    pub at: Instant,
}

/// What one publisher did.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// Acknowledged publications, in order.
    pub acked: Vec<Acked>,
    /// Publishes answered with an error (when, and the code).
    pub failed: Vec<(Instant, String)>,
}

/// One message as a subscriber received it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The channel it arrived on.
    pub channel: String,
    /// The publisher's name (`data.p`).
    pub publisher: String,
    /// The publisher's sequence number (`data.n`).
    pub seq: u64,
    /// The message's `offset`, present on history channels.
    pub offset: Option<u64>,
    /// When it arrived.
    pub at: Instant,
}

/// What one subscriber received.
#[derive(Debug, Clone, Default)]
pub struct Inbox {
    /// Every well-formed message, in arrival order.
    pub deliveries: Vec<Delivery>,
    /// Messages whose `data` was not `{"p":..,"n":..}`.
    pub malformed: usize,
}

type Expected = Arc<HashMap<String, HashSet<(String, u64)>>>;

struct Subscriber {
    name: String,
    channels: Vec<String>,
    task: JoinHandle<Inbox>,
}

struct Publisher {
    name: String,
    task: JoinHandle<Published>,
}

/// Traffic under way: recording subscribers and sequence-numbered publishers,
/// each on its own WebSocket connection and tokio task, running until
/// [`Load::finish`]. Add the subscribers first, so that they are subscribed before
/// anything is published. Publishers and subscribers may use different instances
/// (the point: delivery across instances through Redis).
///
/// A subscriber whose connection closes makes its task panic, which
/// [`finish`](Load::finish) turns into a test failure: a load test expects the
/// server to keep its connections through the fault.
pub struct Load {
    stop: Arc<AtomicBool>,
    expected: watch::Sender<Option<Expected>>,
    publishers: Vec<Publisher>,
    subscribers: Vec<Subscriber>,
    /// When [`Load::new`] was called.
    pub started: Instant,
}

impl Default for Load {
    fn default() -> Self {
        Self::new()
    }
}

impl Load {
    /// No traffic yet: add [`subscriber`](Load::subscriber)s, then
    /// [`publisher`](Load::publisher)s.
    pub fn new() -> Load {
        let (expected, _) = watch::channel(None);
        Load {
            stop: Arc::new(AtomicBool::new(false)),
            expected,
            publishers: Vec::new(),
            subscribers: Vec::new(),
            started: Instant::now(),
        }
    }

    /// A subscriber named `name`, connected at `url` (a shardcast WebSocket URL with
    /// its authentication, e.g. `inst.ws_url("?user=s")`) and subscribed to
    /// `channels` before this returns; it records every message until
    /// [`finish`](Load::finish). Panics if the connection or a subscribe fails.
    pub async fn subscriber(&mut self, url: &str, name: &str, channels: &[String]) {
        let mut c = Client::connect(url).await;
        c.subscribe_all(channels, 0).await;
        let stop = self.stop.clone();
        let mut expected = self.expected.subscribe();
        let mine: Vec<String> = channels.to_vec();
        let task = tokio::spawn(async move {
            let mut got = Inbox::default();
            let mut last = Instant::now();
            let mut drain_started: Option<Instant> = None;
            loop {
                // While publishing runs, read freely; afterwards, until every
                // acknowledged publication on our channels arrived, or QUIET passed
                // without a frame, or the cap.
                if stop.load(Ordering::Relaxed) {
                    let complete = expected
                        .borrow()
                        .as_ref()
                        .is_some_and(|exp| has_all(&got, &mine, exp));
                    let begun = *drain_started.get_or_insert_with(Instant::now);
                    if complete || last.elapsed() > QUIET || begun.elapsed() > DRAIN_CAP {
                        // One more short read catches a late duplicate.
                        if let Some(Received::Frame(f)) =
                            c.next_event(Duration::from_millis(300)).await
                        {
                            record(&mut got, &f);
                            continue;
                        }
                        break;
                    }
                }
                tokio::select! {
                    ev = c.next_event(Duration::from_millis(500)) => match ev {
                        Some(Received::Frame(f)) => {
                            last = Instant::now();
                            record(&mut got, &f);
                        }
                        Some(Received::Closed(code)) => panic!("subscriber closed: {code:?}"),
                        None => {}
                    },
                    _ = expected.changed() => {}
                }
            }
            got
        });
        self.subscribers.push(Subscriber {
            name: name.to_string(),
            channels: channels.to_vec(),
            task,
        });
    }

    /// A publisher named `name` connected at `url`, cycling over `channels` (not
    /// empty), one publish every `every` (at most: each awaits its answer before the
    /// next), each with `data` `{"p": name, "n": seq}`. Acknowledged publishes and
    /// refusals are recorded with their time. Its connection must be allowed to
    /// publish (e.g. `--client-publish authenticated`, and a `--publish-rate` above
    /// `1 / every`). Panics if the connection fails.
    pub async fn publisher(
        &mut self,
        url: &str,
        name: &str,
        channels: Vec<String>,
        every: Duration,
    ) {
        let mut c = Client::connect(url).await;
        let stop = self.stop.clone();
        let pname = name.to_string();
        let task = tokio::spawn(async move {
            let mut out = Published::default();
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
                    out.acked.push(Acked {
                        channel: ch.clone(),
                        seq,
                        at: Instant::now(),
                    });
                } else {
                    out.failed.push((
                        Instant::now(),
                        r["code"].as_str().unwrap_or("?").to_string(),
                    ));
                }
                seq += 1;
            }
            out
        });
        self.publishers.push(Publisher {
            name: name.to_string(),
            task,
        });
    }

    /// Stops publishing, lets every subscriber drain (until it has every
    /// acknowledged publication of its channels, or hears nothing for 5 s, or 60 s
    /// passed), and gathers what was published and received into a [`Report`].
    /// Panics if a publisher or subscriber task panicked (e.g. a subscriber's
    /// connection closed).
    pub async fn finish(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let mut published = HashMap::new();
        for p in self.publishers {
            published.insert(p.name.clone(), p.task.await.expect("publisher task"));
        }
        let mut expected: HashMap<String, HashSet<(String, u64)>> = HashMap::new();
        for (name, p) in &published {
            for a in &p.acked {
                expected
                    .entry(a.channel.clone())
                    .or_default()
                    .insert((name.clone(), a.seq));
            }
        }
        let _ = self.expected.send(Some(Arc::new(expected)));
        let mut received = BTreeMap::new();
        let mut channels = BTreeMap::new();
        for s in self.subscribers {
            channels.insert(s.name.clone(), s.channels.clone());
            received.insert(s.name.clone(), s.task.await.expect("subscriber task"));
        }
        Report {
            published,
            received,
            channels,
        }
    }
}

/// Whether `got` holds every expected publication of `channels`.
fn has_all(got: &Inbox, channels: &[String], expected: &Expected) -> bool {
    let seen: HashSet<(&str, &str, u64)> = got
        .deliveries
        .iter()
        .map(|d| (d.channel.as_str(), d.publisher.as_str(), d.seq))
        .collect();
    channels.iter().all(|ch| {
        expected.get(ch).is_none_or(|set| {
            set.iter()
                .all(|(p, n)| seen.contains(&(ch.as_str(), p.as_str(), *n)))
        })
    })
}

fn record(got: &mut Inbox, f: &serde_json::Value) {
    if f["op"] != "message" {
        return;
    }
    let (Some(channel), Some(publisher), Some(seq)) = (
        f["channel"].as_str(),
        f["data"]["p"].as_str(),
        f["data"]["n"].as_u64(),
    ) else {
        got.malformed += 1;
        return;
    };
    got.deliveries.push(Delivery {
        channel: channel.to_string(),
        publisher: publisher.to_string(),
        seq,
        offset: f["offset"].as_u64(),
        at: Instant::now(),
    });
}

/// Everything published and received, from [`Load::finish`]; judge it with
/// [`Report::outcome`].
pub struct Report {
    /// publisher → what it published
    pub published: HashMap<String, Published>,
    /// subscriber → what it received, in arrival order
    pub received: BTreeMap<String, Inbox>,
    /// subscriber → its channels
    pub channels: BTreeMap<String, Vec<String>>,
}

/// The verdict of [`Report::outcome`], summed over subscribers and channels.
/// Print it (`{o:?}`) in the assertion message: `examples` says where it went
/// wrong.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Acknowledged publications the subscribers should have received (one per
    /// subscriber of the channel).
    pub expected: usize,
    /// Of `expected`, those received at least once.
    pub delivered: usize,
    /// Of `expected`, those never received: `expected - delivered`.
    pub lost: usize,
    /// Extra copies received of one publication (acknowledged or not).
    pub duplicated: usize,
    /// Places where a publisher's sequence numbers went down on a channel.
    pub out_of_order: usize,
    /// Of `expected`, those acknowledged at or after the event.
    pub expected_after: usize,
    /// Of `expected_after`, those received.
    pub delivered_after: usize,
    /// Of `expected_after`, those never received.
    pub lost_after: usize,
    /// Places where a subscriber's offsets on a channel did not go up by one.
    pub offset_gaps: usize,
    /// Deliveries on the judged channels without an offset.
    pub missing_offsets: usize,
    /// Messages not of the load's shape, on any channel.
    pub malformed: usize,
    /// Publishes answered with an error.
    pub failed_publishes: usize,
    /// A few examples, for the failure message.
    pub examples: Vec<String>,
}

impl Report {
    /// Compares, for each subscriber, the acknowledged publications on the channels
    /// it subscribed and `judge(channel)` accepts. `after`: count what was
    /// acknowledged from then on separately.
    pub fn outcome(&self, judge: impl Fn(&str) -> bool, after: Option<Instant>) -> Outcome {
        let mut o = Outcome::default();
        for p in self.published.values() {
            o.failed_publishes += p.failed.len();
        }
        for (sub, got) in &self.received {
            o.malformed += got.malformed;
            let mine = self.channels.get(sub).cloned().unwrap_or_default();
            let wants = |ch: &str| judge(ch) && mine.iter().any(|c| c == ch);
            let mut seen: HashMap<(&str, &str), Vec<u64>> = HashMap::new();
            let mut offsets: HashMap<&str, Vec<u64>> = HashMap::new();
            for d in got.deliveries.iter().filter(|d| wants(&d.channel)) {
                seen.entry((d.publisher.as_str(), d.channel.as_str()))
                    .or_default()
                    .push(d.seq);
                match d.offset {
                    Some(off) => offsets.entry(d.channel.as_str()).or_default().push(off),
                    None => o.missing_offsets += 1,
                }
            }
            for (channel, list) in &offsets {
                for w in list.windows(2).filter(|w| w[1] != w[0] + 1) {
                    o.offset_gaps += 1;
                    if o.examples.len() < 5 {
                        o.examples.push(format!(
                            "{sub}: offsets on {channel}: {} after {}",
                            w[1], w[0]
                        ));
                    }
                }
            }
            for (publisher, p) in &self.published {
                for a in p.acked.iter().filter(|a| wants(&a.channel)) {
                    let is_after = after.is_some_and(|t| a.at >= t);
                    o.expected += 1;
                    o.expected_after += usize::from(is_after);
                    let got_it = seen
                        .get(&(publisher.as_str(), a.channel.as_str()))
                        .is_some_and(|l| l.contains(&a.seq));
                    if got_it {
                        o.delivered += 1;
                        o.delivered_after += usize::from(is_after);
                    } else {
                        o.lost += 1;
                        o.lost_after += usize::from(is_after);
                        if o.examples.len() < 5 {
                            o.examples.push(format!(
                                "{sub}: lost {publisher} #{} on {}",
                                a.seq, a.channel
                            ));
                        }
                    }
                }
            }
            // Duplicates and order over everything received on judged channels,
            // acknowledged or not (a publish that failed must not arrive twice either).
            for ((publisher, channel), list) in &seen {
                let unique: HashSet<&u64> = list.iter().collect();
                o.duplicated += list.len() - unique.len();
                for w in list.windows(2).filter(|w| w[1] < w[0]) {
                    o.out_of_order += 1;
                    if o.examples.len() < 5 {
                        o.examples.push(format!(
                            "{sub}: {publisher} on {channel}: {} after {}",
                            w[1], w[0]
                        ));
                    }
                }
            }
        }
        o
    }

    /// Acknowledged publications between `from` and `to` on channels `judge` accepts.
    pub fn acked_between(&self, judge: impl Fn(&str) -> bool, from: Instant, to: Instant) -> usize {
        self.published
            .values()
            .flat_map(|p| &p.acked)
            .filter(|a| judge(&a.channel) && a.at >= from && a.at < to)
            .count()
    }

    /// When the first publication acknowledged after `t` was, if any.
    pub fn first_ack_after(&self, t: Instant) -> Option<Instant> {
        self.published
            .values()
            .flat_map(|p| &p.acked)
            .map(|a| a.at)
            .filter(|at| *at > t)
            .min()
    }
}

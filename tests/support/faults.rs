//! Fault tests' shared traffic and verdict, the same for every broker: history
//! channels and plain channels side by side, one subscriber on one instance and a
//! publisher per kind on another, judged against what the server acknowledged.

use std::time::Duration;

use shardcast_testkit::Shardcast;
use shardcast_testkit::delivery::{Load, Report};
use tokio::time::Instant;

fn user_url(inst: &Shardcast, name: &str) -> String {
    inst.ws_url(&format!("?user={name}"))
}

/// Acknowledged history publications needed after the event (publishers run every 4 ms).
pub const MIN_AFTER: usize = 200;

/// One subscriber on `sub` to both sets; one publisher per set on `publ`.
pub async fn side_by_side(
    publ: &Shardcast,
    sub: &Shardcast,
    hist: &[String],
    plain: &[String],
) -> Load {
    let mut load = Load::new();
    load.subscriber(&user_url(sub, "s"), "s", &[hist, plain].concat())
        .await;
    load.publisher(
        &user_url(publ, "ph"),
        "ph",
        hist.to_vec(),
        Duration::from_millis(4),
    )
    .await;
    load.publisher(
        &user_url(publ, "pp"),
        "pp",
        plain.to_vec(),
        Duration::from_millis(4),
    )
    .await;
    load
}

/// History channels: nothing lost, repeated, reordered or skipped, before or after
/// `event`, with enough traffic after it, every delivery carrying its offset. Plain
/// channels: no repeats or disorder; their loss is printed, to show the difference.
pub fn judge(what: &str, report: &Report, event: Instant) {
    let h = report.outcome(|c| c.starts_with("h:"), Some(event));
    let p = report.outcome(|c| c.starts_with("p:"), Some(event));
    println!(
        "{what}: history {h:?}\n{what}: plain {p:?} (plain channels may lose publications during the event)"
    );
    assert!(
        h.expected_after >= MIN_AFTER,
        "history traffic after the event: {h:?}"
    );
    assert_eq!(
        (
            h.lost,
            h.duplicated,
            h.out_of_order,
            h.offset_gaps,
            h.missing_offsets,
            h.malformed
        ),
        (0, 0, 0, 0, 0, 0),
        "history channels: {h:?}"
    );
    assert_eq!(
        (p.duplicated, p.out_of_order),
        (0, 0),
        "plain channels: {p:?}"
    );
}

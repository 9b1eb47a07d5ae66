//! Broken WebSocket framing from raw sockets against the real binary: each kind of
//! malformed frame gets the close code RFC 6455 and docs/PROTOCOL.md give it
//! (1002 protocol error, 1007 invalid payload, 1009 too big), and a client that
//! was subscribed meanwhile keeps receiving.

mod support;

use serde_json::json;
use shardcast_testkit::Shardcast;
use shardcast_testkit::ws_frame::{self, FrameBuilder};
use support::SilentClient;

fn server(args: &[&str]) -> shardcast_testkit::ShardcastBuilder {
    Shardcast::with_args(env!("CARGO_BIN_EXE_shardcast"), support::DEV).args(args.iter().copied())
}

/// The frames under test, each with the close code it must earn.
fn malformed() -> Vec<(&'static str, Vec<u8>, u16)> {
    let text = |s: &str| FrameBuilder::text(s);
    let mut cases = Vec::new();

    let mut f = text(r#"{"op":"ping"}"#);
    f.rsv = 0x40;
    cases.push(("reserved bit RSV1 set", f.to_bytes(), 1002));
    let mut f = text("x");
    f.rsv = 0x10;
    cases.push(("reserved bit RSV3 set", f.to_bytes(), 1002));

    cases.push((
        "unknown data opcode 0x3",
        FrameBuilder::new(0x3, &b"x"[..]).to_bytes(),
        1002,
    ));
    cases.push((
        "unknown control opcode 0xB",
        FrameBuilder::new(0xB, &b""[..]).to_bytes(),
        1002,
    ));

    let mut f = FrameBuilder::new(ws_frame::PING, &b"hi"[..]);
    f.fin = false;
    cases.push(("fragmented ping", f.to_bytes(), 1002));

    cases.push((
        "ping with a 126-byte payload",
        FrameBuilder::new(ws_frame::PING, vec![b'p'; 126]).to_bytes(),
        1002,
    ));

    cases.push((
        "continuation with nothing to continue",
        FrameBuilder::new(ws_frame::CONTINUATION, &b"x"[..]).to_bytes(),
        1002,
    ));

    let mut first = text(r#"{"op":"#);
    first.fin = false;
    let mut bytes = first.to_bytes();
    bytes.extend(text(r#"{"op":"ping"}"#).to_bytes());
    cases.push(("a new text frame inside a fragmented message", bytes, 1002));

    let mut f = text(r#"{"op":"ping"}"#);
    f.mask = None;
    cases.push(("unmasked client frame", f.to_bytes(), 1002));

    cases.push((
        "invalid UTF-8 in a text frame",
        FrameBuilder::new(ws_frame::TEXT, &b"{\"op\":\"\xff\xfe\"}"[..]).to_bytes(),
        1007,
    ));

    let mut first = FrameBuilder::new(ws_frame::TEXT, &b"\"\xe2\x82"[..]);
    first.fin = false;
    let mut bytes = first.to_bytes();
    bytes.extend(FrameBuilder::new(ws_frame::CONTINUATION, &b"\x28\""[..]).to_bytes());
    cases.push(("invalid UTF-8 across fragments", bytes, 1007));

    let mut f = text("x");
    f.claimed_len = Some(1 << 63);
    cases.push(("length header claiming 2^63 bytes", f.to_bytes(), 1009));

    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_malformed_frame_closes_with_its_documented_code_and_others_keep_receiving() {
    let inst = server(&[]).start(&[]).await;
    let mut witness = inst.client("witness").await;
    witness.subscribe("news", 1).await;
    let mut publisher = inst.client("publisher").await;

    let mut wrong = Vec::new();
    for (n, (what, bytes, want)) in malformed().into_iter().enumerate() {
        let mut bad = SilentClient::connect(inst.addr, "/ws?user=bad").await;
        bad.send(&bytes).await;
        let (_, code) = bad.read_until_close(support::PATIENCE).await;
        if code != Some(want) {
            wrong.push(format!("{what}: closed with {code:?}, want {want}"));
        }
        // After each one the subscribed client still gets what is published.
        let id = n as u64 + 10;
        let ack = publisher.publish("news", json!({"n": n}), id).await;
        assert_eq!(ack["op"], "ok", "{what}: publish after it: {ack}");
        let m = witness.next_message().await;
        assert_eq!(m["data"]["n"], n, "{what}: witness got {m}");
    }
    assert!(wrong.is_empty(), "wrong close codes:\n{}", wrong.join("\n"));

    // The instance still serves new clients and HTTP.
    let mut late = inst.client("late").await;
    let pong = late.request(json!({"op": "ping"}), 1).await;
    assert_eq!(pong["op"], "pong", "{pong}");
    assert_eq!(inst.get("/healthz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_before_the_connect_frame_gets_1002() {
    // With tokens configured the first frame is read by the connect stage, which
    // must answer broken framing the same way.
    let secret = "malformed-frames-test-secret-0123456789";
    let inst = Shardcast::with_args(env!("CARGO_BIN_EXE_shardcast"), &[])
        .args(["--token-hmac-secret", secret])
        .start(&[])
        .await;
    let mut bad = SilentClient::connect(inst.addr, "/ws").await;
    let mut f = FrameBuilder::text(r#"{"op":"connect","token":"x","id":1}"#);
    f.mask = None;
    bad.send(&f.to_bytes()).await;
    let (_, code) = bad.read_until_close(support::PATIENCE).await;
    assert_eq!(code, Some(1002));

    let mut bad = SilentClient::connect(inst.addr, "/ws").await;
    bad.send(&FrameBuilder::new(ws_frame::TEXT, &b"\xc3\x28"[..]).to_bytes())
        .await;
    let (_, code) = bad.read_until_close(support::PATIENCE).await;
    assert_eq!(code, Some(1007));
}

//! The backend's commands for a user across instances, on a real Redis Cluster
//! with 3 shardcast instances: server-side subscriptions from the token's
//! `channels` and from `POST /api/subscribe`, `POST /api/unsubscribe`, and
//! `POST /api/disconnect`, each reaching the user's connections on every instance
//! (and nobody else's), whichever instance the API call went to.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use shardcast_testkit::{Client, Shardcast, token};
use support::PATIENCE;
use support::cluster::cluster;

const SECRET: &str = "cluster-auth-secret";
const KEY: &str = "cluster-api-key";

async fn api(inst: &Shardcast, path: &str, body: Value) {
    let key = format!("apikey {KEY}");
    let r = inst
        .request(
            "POST",
            path,
            &[("authorization", &key)],
            Some(&body.to_string()),
        )
        .await;
    assert_eq!(r.status, 200, "POST {path} {body}: {}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_commands_and_token_channels_reach_the_user_on_every_instance() {
    let cluster = cluster(1).await;
    let run = Shardcast::on_cluster(env!("CARGO_BIN_EXE_shardcast"), &cluster.seeds()).args([
        "--token-hmac-secret",
        SECRET,
        "--api-key",
        KEY,
    ]);
    let insts = [
        run.start(&[]).await,
        run.start(&[]).await,
        run.start(&[]).await,
    ];
    let alice_token = token::connection(SECRET, "alice", Duration::from_secs(600), None, &["news"]);
    let bob_token = token::connection(SECRET, "bob", Duration::from_secs(600), None, &[]);

    // Alice on every instance; each connection is subscribed to `news` by its token.
    let mut alices = Vec::new();
    for inst in &insts {
        let mut c = Client::with_token(&inst.ws_url(""), &alice_token).await;
        let s = c.next_op("subscribed").await;
        assert_eq!(s["channel"], "news", "{s}");
        alices.push(c);
    }
    let mut bob = Client::with_token(&insts[1].ws_url(""), &bob_token).await;

    api(
        &insts[0],
        "/api/publish",
        json!({"channel":"news","data":"headline"}),
    )
    .await;
    for c in &mut alices {
        assert_eq!(c.next_message().await["data"], "headline");
    }

    // A server-side subscription through instance 1: every alice connection.
    api(
        &insts[1],
        "/api/subscribe",
        json!({"user":"alice","channel":"extra"}),
    )
    .await;
    for c in &mut alices {
        let s = c.next_op("subscribed").await;
        assert_eq!(s["channel"], "extra", "{s}");
    }
    api(
        &insts[2],
        "/api/publish",
        json!({"channel":"extra","data":1}),
    )
    .await;
    for c in &mut alices {
        assert_eq!(c.next_message().await["data"], 1);
    }

    // And its removal through instance 2.
    api(
        &insts[2],
        "/api/unsubscribe",
        json!({"user":"alice","channel":"extra"}),
    )
    .await;
    for c in &mut alices {
        let u = c.next_op("unsubscribed").await;
        assert_eq!(u["channel"], "extra", "{u}");
    }
    api(
        &insts[0],
        "/api/publish",
        json!({"channel":"extra","data":2}),
    )
    .await;
    api(
        &insts[0],
        "/api/publish",
        json!({"channel":"news","data":"still"}),
    )
    .await;
    for c in &mut alices {
        assert_eq!(
            c.next_message().await["data"],
            "still",
            "nothing on `extra` any more"
        );
    }

    // Disconnect through instance 0: every alice connection closes with 4501, bob stays.
    api(&insts[0], "/api/disconnect", json!({"user":"alice"})).await;
    for c in &mut alices {
        assert_eq!(c.expect_close(PATIENCE).await, Some(4501));
    }
    assert_eq!(
        bob.request(json!({"op":"ping"}), 1).await["op"],
        "pong",
        "another user is not touched"
    );

    // Bad requests are refused with JSON errors.
    let key = format!("apikey {KEY}");
    for (path, body) in [
        ("/api/subscribe", json!({"user":"alice"})),
        ("/api/disconnect", json!({"user":"has space"})),
        ("/api/unsubscribe", json!({"channel":"x"})),
    ] {
        let r = insts[0]
            .request(
                "POST",
                path,
                &[("authorization", &key)],
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(
            (r.status, r.json()["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{path} {body}"
        );
    }
    let r = insts[0]
        .request("POST", "/api/disconnect", &[], Some(r#"{"user":"bob"}"#))
        .await;
    assert_eq!(r.status, 401, "no key: {}", r.body);
}

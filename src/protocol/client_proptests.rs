//! Property tests for client frame parsing: arbitrary text, frames generated from
//! the frame grammar (every op, with right and wrong fields), mutated frames and
//! deep nesting. The expectations come from a model written from the documented
//! rules, not from the parser.

use std::collections::BTreeSet;
use std::fmt;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use serde::de::{MapAccess, Visitor};

use super::*;

const OPS: &[&str] = &[
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "presence_stats",
    "history",
    "connect",
    "refresh",
    "sub_refresh",
    "ping",
];

/// A fixed number of cases, and no regression files written into the tree.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases)
    }
}

// ---------------------------------------------------------------------------------
// The oracle: what a JSON parser says about the top level of a text.

/// The members of a JSON object, in order, values left raw.
struct Members(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                    out.push(entry);
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// What the text is at the top level.
#[derive(Debug, PartialEq)]
enum TopLevel {
    /// Not one JSON object.
    Invalid,
    /// An object with a repeated member name (the standard leaves its meaning open).
    DuplicateKeys,
    /// An object with unique member names, and what its `id` member is.
    Object { id: IdField },
}

#[derive(Debug, PartialEq, Clone, Copy)]
enum IdField {
    Absent,
    U64(u64),
    /// Present but not an unsigned 64-bit integer.
    Wrong,
}

fn top_level(text: &str) -> TopLevel {
    let Ok(Members(members)) = serde_json::from_str::<Members>(text) else {
        return TopLevel::Invalid;
    };
    let names: BTreeSet<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
    if names.len() != members.len() {
        return TopLevel::DuplicateKeys;
    }
    let id = match members.iter().find(|(k, _)| k == "id") {
        None => IdField::Absent,
        Some((_, raw)) => match serde_json::from_str::<u64>(raw.get()) {
            Ok(n) => IdField::U64(n),
            Err(_) => IdField::Wrong,
        },
    };
    TopLevel::Object { id }
}

/// The properties every text has, whatever it is: no panic (the call returns), a
/// text that is not JSON is refused, and the answer names the request whenever its
/// id is readable (a frame refused for a wrong `id` has none to name).
fn check_against_oracle(text: &str) -> Result<(), TestCaseError> {
    let result = parse_client_frame(text);
    match top_level(text) {
        TopLevel::Invalid => {
            prop_assert!(
                result.is_err(),
                "accepted a text that is not a JSON object: {:?}",
                text
            );
        }
        TopLevel::DuplicateKeys => {}
        TopLevel::Object { id } => match (id, result) {
            (IdField::Wrong, Ok(f)) => {
                prop_assert!(
                    false,
                    "accepted a frame with a wrong id: {:?} -> {:?}",
                    text,
                    f
                );
            }
            (IdField::Wrong, Err(e)) => prop_assert_eq!(e.id, None, "{:?}", text),
            (IdField::Absent, Ok(f)) => prop_assert_eq!(f.id, None, "{:?}", text),
            (IdField::Absent, Err(e)) => prop_assert_eq!(e.id, None, "{:?}", text),
            (IdField::U64(n), Ok(f)) => prop_assert_eq!(f.id, Some(n), "{:?}", text),
            (IdField::U64(n), Err(e)) => {
                prop_assert_eq!(
                    e.id,
                    Some(n),
                    "the error lost the id: {:?} -> {:?}",
                    text,
                    e
                )
            }
        },
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Generated frames and their model.

/// One generated member value: its JSON text follows from it.
#[derive(Debug, Clone)]
enum Val {
    /// An unsigned integer in plain decimal.
    U64(u64),
    /// A string; `escaped` writes every character as a `\u` escape.
    Str { s: String, escaped: bool },
    /// `{"offset":..,"epoch":..}` (the epoch may still be invalid).
    Since {
        offset: u64,
        epoch: String,
        escaped: bool,
    },
    /// JSON that is neither an unsigned integer, nor a string, nor a since object.
    Other(String),
    /// Any JSON value at all (only where any value is allowed, or ignored).
    Json(String),
}

impl Val {
    fn json(&self) -> String {
        match self {
            Val::U64(n) => n.to_string(),
            Val::Str { s, escaped } => json_string(s, *escaped),
            Val::Since {
                offset,
                epoch,
                escaped,
            } => format!(
                r#"{{"offset":{offset},"epoch":{}}}"#,
                json_string(epoch, *escaped)
            ),
            Val::Other(t) | Val::Json(t) => t.clone(),
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str { s, .. } => Some(s),
            _ => None,
        }
    }
}

fn json_string(s: &str, escaped: bool) -> String {
    if !escaped {
        return serde_json::to_string(s).expect("a string serializes");
    }
    let mut out = String::from("\"");
    for unit in s.encode_utf16() {
        out.push_str(&format!("\\u{unit:04x}"));
    }
    out.push('"');
    out
}

/// A generated frame: members in order, each with its name written plainly or escaped.
#[derive(Debug, Clone)]
struct Gen {
    members: Vec<(String, bool, Val)>,
    space: &'static str,
}

impl Gen {
    fn text(&self) -> String {
        let sp = self.space;
        let body: Vec<String> = self
            .members
            .iter()
            .map(|(k, escaped, v)| format!("{}{sp}:{sp}{}", json_string(k, *escaped), v.json()))
            .collect();
        format!("{sp}{{{sp}{}{sp}}}{sp}", body.join(&format!("{sp},{sp}")))
    }

    fn get(&self, name: &str) -> Option<&Val> {
        self.members
            .iter()
            .find(|(k, _, _)| k == name)
            .map(|(_, _, v)| v)
    }
}

/// The documented rules, one function each.
fn channel_ok(s: &str) -> bool {
    // "1-255 bytes of UTF-8 without whitespace or control characters"
    (1..=255).contains(&s.len()) && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}
fn epoch_ok(s: &str) -> bool {
    // "up to 64 ASCII letters and digits"
    s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}
fn key_ok(s: &str) -> bool {
    // "An idempotency key: 1-128 bytes."
    (1..=MAX_IDEMPOTENCY_KEY_BYTES).contains(&s.len())
}
fn token_ok(s: &str) -> bool {
    (1..=MAX_TOKEN_BYTES).contains(&s.len())
}

/// What the model expects of a generated frame.
#[derive(Debug)]
struct Expected {
    /// The id the answer must carry.
    id: Option<u64>,
    accepted: bool,
}

fn model(g: &Gen) -> Expected {
    let id = match g.get("id") {
        None => None,
        Some(Val::U64(n)) => Some(*n),
        Some(_) => {
            return Expected {
                id: None,
                accepted: false,
            };
        }
    };
    let refused = Expected {
        id,
        accepted: false,
    };
    let op = match g.get("op") {
        Some(Val::Str { s, escaped }) if OPS.contains(&s.as_str()) && !*escaped => s.as_str(),
        _ => return refused,
    };
    let channel = || {
        g.get("channel")
            .and_then(Val::as_str)
            .is_some_and(channel_ok)
    };
    let token_required = || g.get("token").and_then(Val::as_str).is_some_and(token_ok);
    let token_optional = || match g.get("token") {
        None => true,
        Some(v) => v.as_str().is_some_and(token_ok),
    };
    let accepted = match op {
        "connect" | "refresh" => token_required(),
        "sub_refresh" => channel() && token_required(),
        "unsubscribe" | "presence" | "presence_stats" => channel(),
        "ping" => true,
        "subscribe" => {
            let since = match g.get("since") {
                None => true,
                Some(Val::Since { epoch, .. }) => epoch_ok(epoch),
                Some(_) => false,
            };
            since && channel() && token_optional()
        }
        "publish" => {
            let key = match g.get("idempotency_key") {
                None => true,
                Some(v) => v.as_str().is_some_and(key_ok),
            };
            channel() && g.get("data").is_some() && key
        }
        "history" => {
            let since = matches!(g.get("since"), None | Some(Val::U64(_)));
            let limit = match g.get("limit") {
                None => true,
                Some(Val::U64(n)) => (1..=MAX_HISTORY_LIMIT as u64).contains(n),
                Some(_) => false,
            };
            since && limit && channel()
        }
        _ => unreachable!(),
    };
    Expected { id, accepted }
}

/// An accepted frame carries exactly the generated fields.
fn check_fields(g: &Gen, f: &ClientFrame) -> Result<(), TestCaseError> {
    let s = |name: &str| g.get(name).and_then(Val::as_str).map(str::to_string);
    let channel = s("channel");
    let op = s("op").expect("accepted frames have an op");
    match (&f.request, op.as_str()) {
        (Request::Connect { token }, "connect") | (Request::Refresh { token }, "refresh") => {
            prop_assert_eq!(Some(token.clone()), s("token"));
        }
        (
            Request::Subscribe {
                channel: c,
                since,
                token,
            },
            "subscribe",
        ) => {
            prop_assert_eq!(Some(c.as_str().to_string()), channel);
            prop_assert_eq!(token.clone(), s("token"));
            let want = match g.get("since") {
                Some(Val::Since { offset, epoch, .. }) => Some(Since {
                    offset: *offset,
                    epoch: epoch.clone(),
                }),
                _ => None,
            };
            prop_assert_eq!(since.clone(), want);
        }
        (Request::SubRefresh { channel: c, token }, "sub_refresh") => {
            prop_assert_eq!(Some(c.as_str().to_string()), channel);
            prop_assert_eq!(Some(token.clone()), s("token"));
        }
        (Request::Unsubscribe { channel: c }, "unsubscribe")
        | (Request::Presence { channel: c }, "presence")
        | (Request::PresenceStats { channel: c }, "presence_stats") => {
            prop_assert_eq!(Some(c.as_str().to_string()), channel);
        }
        (
            Request::Publish {
                channel: c,
                data,
                idempotency_key,
            },
            "publish",
        ) => {
            prop_assert_eq!(Some(c.as_str().to_string()), channel);
            let want = g.get("data").expect("publish has data").json();
            prop_assert_eq!(data.get(), want.as_str(), "data bytes round-trip");
            prop_assert_eq!(idempotency_key.clone(), s("idempotency_key"));
        }
        (
            Request::History {
                channel: c,
                since,
                limit,
            },
            "history",
        ) => {
            prop_assert_eq!(Some(c.as_str().to_string()), channel);
            let want_since = match g.get("since") {
                Some(Val::U64(n)) => *n,
                _ => 0,
            };
            let want_limit = match g.get("limit") {
                Some(Val::U64(n)) => *n as usize,
                _ => 100,
            };
            prop_assert_eq!((*since, *limit), (want_since, want_limit));
        }
        (Request::Ping, "ping") => {}
        (request, op) => prop_assert!(false, "op {} parsed as {:?}", op, request),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Strategies.

fn str_val(s: impl Strategy<Value = String>) -> impl Strategy<Value = Val> {
    (s, proptest::bool::weighted(0.15)).prop_map(|(s, escaped)| Val::Str { s, escaped })
}

/// Numbers no u64 field takes: negative, fractional, exponents, too large.
fn odd_number() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            "-1",
            "-0",
            "0.0",
            "1.0",
            "1e2",
            "1E+2",
            "1e400",
            "-1e400",
            "5e-324",
            "18446744073709551616",
            "99999999999999999999999999999999999999",
            "-9223372036854775809",
            "0.000000000000000000000000000000001",
        ])
        .prop_map(String::from),
        (i64::MIN..0).prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite, not integral", |f| f.is_finite()
                && f.fract() != 0.0)
            .prop_map(|f| serde_json::to_string(&f).expect("finite")),
    ]
}

/// Nested arrays or objects, up to 600 deep.
fn deep() -> impl Strategy<Value = String> {
    (1usize..600, any::<bool>()).prop_map(|(depth, arrays)| {
        if arrays {
            format!("{}{}", "[".repeat(depth), "]".repeat(depth))
        } else {
            format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth))
        }
    })
}

/// Any JSON value, as text.
fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        select(vec!["null", "true", "false", "0", "{}", "[]", "\"\""]).prop_map(String::from),
        any::<u64>().prop_map(|n| n.to_string()),
        odd_number(),
        any::<String>().prop_map(|s| json_string(&s, false)),
        "\\PC{0,6}".prop_map(|s| json_string(&s, true)),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(|v| format!("[{}]", v.join(","))),
            vec(("[a-z]{0,3}", inner), 0..5).prop_map(|kv| {
                let members: Vec<String> = kv
                    .iter()
                    .map(|(k, v)| format!("{}:{v}", json_string(k, false)))
                    .collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    })
}

/// JSON that is not an unsigned integer, a string or a since object.
fn other() -> impl Strategy<Value = Val> {
    prop_oneof![
        select(vec![
            "null",
            "true",
            "false",
            "[]",
            "{}",
            "[1]",
            r#"{"a":1}"#
        ])
        .prop_map(String::from),
        odd_number(),
        deep(),
        json_value().prop_map(|v| format!("[{v}]")),
    ]
    .prop_map(Val::Other)
}

fn id() -> impl Strategy<Value = Val> {
    prop_oneof![
        6 => any::<u64>().prop_map(Val::U64),
        2 => select(vec![0, 1, u64::MAX]).prop_map(Val::U64),
        2 => other(),
        1 => str_val("[0-9]{1,3}"),
    ]
}

fn op() -> impl Strategy<Value = Val> {
    prop_oneof![
        12 => select(OPS.to_vec()).prop_map(|s| Val::Str { s: s.into(), escaped: false }),
        2 => select(OPS.to_vec()).prop_map(|s| Val::Str { s: s.into(), escaped: true }),
        1 => select(vec!["PING", "Subscribe", "ping ", " ping", "pub", "", "ping\u{0}", "história"])
            .prop_map(|s| Val::Str { s: s.into(), escaped: false }),
        1 => str_val(any::<String>()),
        1 => other(),
    ]
}

fn long(unit: &'static str, times: usize, extra: &'static str) -> String {
    format!("{}{extra}", unit.repeat(times))
}

fn channel() -> impl Strategy<Value = Val> {
    prop_oneof![
        8 => str_val("[a-z0-9:._{}-]{1,16}"),
        2 => str_val("[a-zé✓:{}\u{1F600}]{1,8}"),
        2 => str_val(prop_oneof![
            Just(long("a", 255, "")),
            Just(long("a", 256, "")),
            Just(long("é", 127, "a")),
            Just(long("é", 128, "")),
            Just(String::new()),
            select(vec!["a b", "a\u{0}", "a\u{a0}", "\u{2028}", "a\tb", "\u{85}", "a\u{7f}", "x\u{3000}y"])
                .prop_map(String::from),
        ]),
        1 => str_val(any::<String>()),
        1 => any::<u64>().prop_map(Val::U64),
        1 => other(),
    ]
}

fn token() -> impl Strategy<Value = Val> {
    prop_oneof![
        6 => str_val("[a-zA-Z0-9._-]{1,40}"),
        2 => str_val(prop_oneof![
            Just(String::new()),
            Just(long("a", MAX_TOKEN_BYTES, "")),
            Just(long("a", MAX_TOKEN_BYTES + 1, "")),
            Just(long("é", MAX_TOKEN_BYTES / 2, "")),
            Just(long("é", MAX_TOKEN_BYTES / 2, "a")),
        ]),
        1 => str_val(any::<String>()),
        1 => any::<u64>().prop_map(Val::U64),
        1 => other(),
    ]
}

fn idempotency_key() -> impl Strategy<Value = Val> {
    prop_oneof![
        4 => str_val("[ -~]{1,40}"),
        3 => str_val(prop_oneof![
            Just(String::new()),
            Just(long("k", 128, "")),
            Just(long("k", 129, "")),
            Just(long("é", 64, "")),
            Just(long("é", 64, "a")),
            Just(long("✓", 42, "ab")),
            Just(long("✓", 43, "")),
            Just(long("\u{1F600}", 32, "")),
            Just(long("\u{1F600}", 32, "a")),
        ]),
        2 => str_val((0usize..140).prop_flat_map(|n| vec(any::<char>(), n)).prop_map(String::from_iter)),
        1 => any::<u64>().prop_map(Val::U64),
        1 => other(),
    ]
}

fn epoch() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9]{0,64}",
        2 => "[a-zA-Z0-9]{65,70}",
        1 => select(vec!["e-1", "é", "a b", "A_B", "\u{0}", "０"]).prop_map(String::from),
        1 => any::<String>(),
    ]
}

/// The `since` of a subscribe (an object), with its near misses.
fn since_object() -> impl Strategy<Value = Val> {
    prop_oneof![
        6 => (any::<u64>(), epoch(), proptest::bool::weighted(0.15))
            .prop_map(|(offset, epoch, escaped)| Val::Since { offset, epoch, escaped }),
        3 => (any::<u64>(), "[a-z0-9]{0,8}").prop_flat_map(|(offset, epoch)| select(vec![
            format!(r#"{{"offset":{offset}}}"#),
            format!(r#"{{"epoch":"{epoch}"}}"#),
            format!(r#"{{"offset":"{offset}","epoch":"{epoch}"}}"#),
            format!(r#"{{"offset":-1,"epoch":"{epoch}"}}"#),
            format!(r#"{{"offset":1.5,"epoch":"{epoch}"}}"#),
            format!(r#"{{"offset":18446744073709551616,"epoch":"{epoch}"}}"#),
            format!(r#"{{"offset":{offset},"epoch":7}}"#),
            format!(r#"{{"offset":{offset},"epoch":null}}"#),
            format!(r#"{{"offset":{offset},"epoch":"{epoch}","x":1}}"#),
            format!(r#"{{"offset":{offset},"epoch":"{epoch}","offset":{offset}}}"#),
            // (`[offset, "epoch"]` has a test of its own, below.)
            format!(r#"[{offset}]"#),
            format!(r#"[{offset},"{epoch}",1]"#),
        ])).prop_map(Val::Other),
        1 => any::<u64>().prop_map(Val::U64),
        1 => str_val("[a-z0-9]{0,8}"),
        1 => other(),
    ]
}

/// The `since` of a history request (an offset).
fn since_offset() -> impl Strategy<Value = Val> {
    prop_oneof![
        6 => any::<u64>().prop_map(Val::U64),
        1 => (any::<u64>(), "[a-z0-9]{0,8}")
            .prop_map(|(offset, epoch)| Val::Since { offset, epoch, escaped: false }),
        1 => str_val("[0-9]{1,4}"),
        2 => other(),
    ]
}

fn limit() -> impl Strategy<Value = Val> {
    prop_oneof![
        4 => select(vec![0, 1, 2, 100, 999, 1000, 1001, u64::MAX]).prop_map(Val::U64),
        3 => (0u64..2000).prop_map(Val::U64),
        1 => any::<u64>().prop_map(Val::U64),
        1 => str_val("[0-9]{1,4}"),
        2 => other(),
    ]
}

fn data() -> impl Strategy<Value = Val> {
    prop_oneof![
        8 => json_value(),
        1 => deep(),
        1 => Just(format!("\"{}\"", "x".repeat(70_000))),
    ]
    .prop_map(Val::Json)
}

/// A frame from the grammar: each member present or not (more often present when the
/// op needs it), an unknown member or two, in any order.
fn frame() -> impl Strategy<Value = Gen> {
    let member = |name: &'static str, p: f64, v: BoxedStrategy<Val>| {
        (
            proptest::bool::weighted(p),
            proptest::bool::weighted(0.05),
            v,
        )
            .prop_map(move |(present, escaped, v)| present.then(|| (name.to_string(), escaped, v)))
    };
    let unknown = vec(
        (
            select(vec![
                "ID", "Op", "extra", "idd", "", "chan nel", "offset", "epoch",
            ]),
            json_value(),
        )
            .prop_map(|(k, v)| (k.to_string(), false, Val::Json(v))),
        0..2,
    );
    (
        (
            member("id", 0.8, id().boxed()),
            member("op", 0.95, op().boxed()),
            member("channel", 0.85, channel().boxed()),
            member("data", 0.5, data().boxed()),
        ),
        (
            member(
                "since",
                0.3,
                prop_oneof![since_object(), since_offset()].boxed(),
            ),
            member("idempotency_key", 0.3, idempotency_key().boxed()),
            member("token", 0.4, token().boxed()),
            member("limit", 0.3, limit().boxed()),
        ),
        unknown,
        select(vec!["", "", "", " ", "\n", "\t", "\r\n "]),
    )
        .prop_flat_map(|((a, b, c, d), (e, f, g, h), unknown, space)| {
            let members: Vec<_> = [a, b, c, d, e, f, g, h]
                .into_iter()
                .flatten()
                .chain(unknown)
                .collect();
            Just(members)
                .prop_shuffle()
                .prop_map(move |members| Gen { members, space })
        })
}

/// A frame with a valid op and the fields it needs, so that most are accepted.
fn mostly_valid_frame() -> impl Strategy<Value = Gen> {
    (
        select(OPS.to_vec()),
        proptest::option::of(any::<u64>()),
        "[a-z0-9:._{}-]{1,16}",
        json_value(),
        "[a-zA-Z0-9._-]{1,40}",
        proptest::option::of((any::<u64>(), "[a-zA-Z0-9]{0,64}")),
        proptest::option::of("[ -~]{1,128}"),
        proptest::option::of(1u64..=1000),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(|(op, id, ch, data, tok, since, key, limit, offset)| {
            let mut m = vec![(
                "op".to_string(),
                false,
                Val::Str {
                    s: op.into(),
                    escaped: false,
                },
            )];
            let s = |s: String| Val::Str { s, escaped: false };
            if let Some(id) = id {
                m.push(("id".into(), false, Val::U64(id)));
            }
            if op != "ping" && op != "connect" && op != "refresh" {
                m.push(("channel".into(), false, s(ch)));
            }
            match op {
                "publish" => {
                    m.push(("data".into(), false, Val::Json(data)));
                    if let Some(k) = key {
                        m.push(("idempotency_key".into(), false, s(k)));
                    }
                }
                "connect" | "refresh" | "sub_refresh" => m.push(("token".into(), false, s(tok))),
                "subscribe" => {
                    if let Some((offset, epoch)) = since {
                        m.push((
                            "since".into(),
                            false,
                            Val::Since {
                                offset,
                                epoch,
                                escaped: false,
                            },
                        ));
                    }
                }
                "history" => {
                    if let Some(o) = offset {
                        m.push(("since".into(), false, Val::U64(o)));
                    }
                    if let Some(l) = limit {
                        m.push(("limit".into(), false, Val::U64(l)));
                    }
                }
                _ => {}
            }
            m.reverse();
            Gen {
                members: m,
                space: "",
            }
        })
}

/// Small edits that break a frame in the ways a buggy client or a fuzzer would.
#[derive(Debug, Clone)]
enum Edit {
    Truncate(usize),
    Delete(usize),
    Insert(usize, &'static str),
    Repeat(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<usize>().prop_map(Edit::Truncate),
        any::<usize>().prop_map(Edit::Delete),
        (
            any::<usize>(),
            select(vec![
                "{",
                "}",
                "[",
                "]",
                "\"",
                ",",
                ":",
                "\\",
                "\\u",
                "\\ud800",
                " ",
                "0",
                "-",
                "e",
                "\u{0}",
                "é",
                "null",
                r#","id":1"#
            ])
        )
            .prop_map(|(i, s)| Edit::Insert(i, s)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Edit::Repeat(i, n)),
    ]
}

fn boundary(text: &str, i: usize) -> usize {
    let mut i = i % (text.len() + 1);
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(text: &str, edit: &Edit) -> String {
    let mut t = text.to_string();
    match *edit {
        Edit::Truncate(i) => t.truncate(boundary(text, i)),
        Edit::Delete(i) => {
            let i = boundary(text, i);
            if i < t.len() {
                t.remove(i);
            }
        }
        Edit::Insert(i, s) => t.insert_str(boundary(text, i), s),
        Edit::Repeat(i, n) => {
            let start = boundary(text, i);
            let end = boundary(text, start + n);
            if end > start {
                let span = text[start..end].to_string();
                t.insert_str(start, &span);
            }
        }
    }
    t
}

// ---------------------------------------------------------------------------------
// Properties.

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_strings_never_panic_and_keep_a_readable_id(
        text in prop_oneof![
            any::<String>(),
            "\\{[\\PC\"{}:,\\[\\] 0-9a-z]{0,40}",
            "[ \t\r\n]{0,2}\\{\"(id|op|channel|data|since)\":[\\PC{}\\[\\],:\" ]{0,40}",
        ]
    ) {
        check_against_oracle(&text)?;
    }

    #[test]
    fn generated_frames_are_judged_exactly_by_the_documented_rules(g in frame()) {
        let text = g.text();
        let expected = model(&g);
        check_against_oracle(&text)?;
        match parse_client_frame(&text) {
            Ok(f) => {
                prop_assert!(expected.accepted, "accepted, the model refuses: {}", text);
                prop_assert_eq!(f.id, expected.id);
                check_fields(&g, &f)?;
            }
            Err(e) => {
                prop_assert!(!expected.accepted, "refused ({}), the model accepts: {}", e.message, text);
                prop_assert_eq!(e.id, expected.id, "{}", text);
                prop_assert_eq!(e.code, ErrorCode::BadRequest);
            }
        }
    }

    #[test]
    fn valid_frames_round_trip_their_fields(g in mostly_valid_frame()) {
        let text = g.text();
        let expected = model(&g);
        prop_assert!(expected.accepted, "the strategy made an invalid frame: {}", text);
        let f = parse_client_frame(&text);
        prop_assert!(f.is_ok(), "refused {}: {:?}", text, f);
        let f = f.unwrap();
        prop_assert_eq!(f.id, expected.id);
        check_fields(&g, &f)?;
    }

    #[test]
    fn edited_frames_never_panic_and_keep_a_readable_id(g in frame(), edits in vec(edit(), 1..4)) {
        let mut text = g.text();
        for e in &edits {
            text = apply(&text, e);
        }
        check_against_oracle(&text)?;
    }

    #[test]
    fn deep_nesting_anywhere_never_panics_and_keeps_the_id(
        field in select(vec!["id", "op", "channel", "data", "since", "token", "limit", "idempotency_key", "other"]),
        op in select(OPS.to_vec()),
        nested in deep(),
        id in any::<u64>(),
        id_first in any::<bool>(),
    ) {
        let mut members = vec![
            format!(r#""op":"{op}""#),
            r#""channel":"c""#.to_string(),
        ];
        if field != "id" {
            members.push(format!(r#""id":{id}"#));
        }
        if id_first {
            members.reverse();
        }
        members.push(format!(r#""{field}":{nested}"#));
        let text = format!("{{{}}}", members.join(","));
        check_against_oracle(&text)?;
        let r = parse_client_frame(&text);
        if field == "data" && op == "publish" {
            // Any JSON value may be published; nesting is the subscribers' business.
            let f = r.map_err(|e| TestCaseError::fail(format!("{text}: {e:?}")))?;
            match f.request {
                Request::Publish { data, .. } => prop_assert_eq!(data.get(), nested.as_str()),
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }

    #[test]
    fn check_idempotency_key_accepts_exactly_1_to_128_bytes(
        key in prop_oneof![
            (0usize..140).prop_flat_map(|n| vec(any::<char>(), n)).prop_map(String::from_iter),
            (0usize..140).prop_map(|n| "k".repeat(n)),
            (0usize..50).prop_map(|n| "é✓".repeat(n)),
        ]
    ) {
        let ok = check_idempotency_key(&key).is_ok();
        prop_assert_eq!(ok, (1..=128).contains(&key.len()), "{} bytes", key.len());
        // The same rule through a publish frame, written plainly and escaped.
        for escaped in [false, true] {
            let text = format!(
                r#"{{"op":"publish","channel":"c","data":1,"id":5,"idempotency_key":{}}}"#,
                json_string(&key, escaped)
            );
            match parse_client_frame(&text) {
                Ok(ClientFrame { request: Request::Publish { idempotency_key, .. }, id }) => {
                    prop_assert!(ok, "accepted a {} byte key", key.len());
                    prop_assert_eq!(idempotency_key, Some(key.clone()));
                    prop_assert_eq!(id, Some(5));
                }
                Ok(other) => prop_assert!(false, "{:?}", other),
                Err(e) => {
                    prop_assert!(!ok, "refused a {} byte key: {}", key.len(), e.message);
                    prop_assert_eq!(e.id, Some(5));
                }
            }
        }
    }

    #[test]
    fn since_is_accepted_exactly_with_an_epoch_of_up_to_64_ascii_letters_and_digits(
        offset in any::<u64>(),
        epoch in epoch(),
        escaped in any::<bool>(),
    ) {
        let ok = epoch_ok(&epoch);
        prop_assert_eq!(check_epoch(&epoch).is_ok(), ok);
        let text = format!(
            r#"{{"op":"subscribe","channel":"c","id":9,"since":{{"epoch":{},"offset":{offset}}}}}"#,
            json_string(&epoch, escaped)
        );
        match parse_client_frame(&text) {
            Ok(ClientFrame { request: Request::Subscribe { since, .. }, .. }) => {
                prop_assert!(ok, "accepted epoch {:?}", epoch);
                prop_assert_eq!(since, Some(Since { offset, epoch: epoch.clone() }));
            }
            Ok(other) => prop_assert!(false, "{:?}", other),
            Err(e) => {
                prop_assert!(!ok, "refused epoch {:?}: {}", epoch, e.message);
                prop_assert_eq!(e.id, Some(9));
            }
        }
    }

    #[test]
    fn since_in_any_other_shape_is_refused_with_the_id(
        since in prop_oneof![
            since_object().prop_filter("not a since object", |v| !matches!(v, Val::Since { .. })),
            other(),
        ]
    ) {
        let text = format!(
            r#"{{"op":"subscribe","channel":"c","id":4,"since":{}}}"#,
            since.json()
        );
        let r = parse_client_frame(&text);
        prop_assert!(r.is_err(), "accepted since {}: {:?}", since.json(), r);
        prop_assert_eq!(r.unwrap_err().id, Some(4));
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn since_as_a_positional_array_is_refused(offset in any::<u64>(), epoch in "[a-zA-Z0-9]{0,64}") {
        // The error message promises an object, and the top level already refuses
        // objects read positionally from arrays; `since` must too.
        let text = format!(
            r#"{{"op":"subscribe","channel":"c","id":3,"since":[{offset},"{epoch}"]}}"#
        );
        let r = parse_client_frame(&text);
        prop_assert!(r.is_err(), "accepted {}: {:?}", text, r.map(|f| f.request));
        prop_assert_eq!(r.unwrap_err().id, Some(3));
    }
}

//! Export: JSON lines round trip, OCSF classes and fields, OTLP/HTTP to a
//! real (tiny) collector on loopback.

use crate::util::{event, http_refused, http_request, mcp_denied_call, one_of_each, stored, temp_store};
use corral_audit::export::otlp::{self, OtlpConfig, OtlpStats};
use corral_audit::export::{export_query, jsonl, ocsf, Format};
use corral_audit::{Pipeline, PipelineStats, Query, Store, Stored};
use corral_core::{Decision, Mode, What};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message as _;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A realistic wall-clock time: 2023-11-14T22:13:20.123456789Z.
const WALL: u64 = 1_700_000_000_123_456_789;

/// `one_of_each` plus the supervisor's own events, a default deny, and two
/// http events (an allowed request, a refused connection of an unknown
/// process).
fn all_kinds(session: u32) -> Vec<corral_core::Event> {
    let mut v = one_of_each(session);
    v.push(event(
        session,
        What::SessionStart {
            mode: Mode::Shadow,
            policy_sha256: "ab".repeat(32),
            command: vec!["claude".into(), "--resume".into()],
        },
        None,
    ));
    v.push(event(
        session,
        What::SessionEnd {
            exit: "exit 0".into(),
        },
        None,
    ));
    v.push(event(session, What::ModeChange { mode: Mode::Enforce }, None));
    v.push(event(
        session,
        What::PolicyLoad {
            label: "team.cedar".into(),
            sha256: "cd".repeat(32),
            error: Some("line 3: unknown action".into()),
        },
        None,
    ));
    let mut default_deny = event(
        session,
        What::FileOpen {
            path: "/etc/shadow".into(),
            access: corral_core::Access::Read,
        },
        Some(Decision::Deny),
    );
    default_deny.policies.clear();
    v.push(default_deny);
    v.push(mcp_denied_call(session));
    v.push(http_request(session));
    v.push(http_refused(session));
    v
}

/// All kinds stored in a fresh store, ids set, at WALL + i.
fn stored_fixture() -> (tempfile::TempDir, Store, Vec<Stored>) {
    let (dir, mut store) = temp_store();
    let mut all: Vec<Stored> = all_kinds(3)
        .into_iter()
        .enumerate()
        .map(|(i, e)| stored(WALL + i as u64, e))
        .collect();
    store.insert_assign(&mut all).unwrap();
    (dir, store, all)
}

fn lines(buf: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(buf).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "last line unterminated");
    text.lines().map(str::to_owned).collect()
}

// ---------------------------------------------------------------- JSON lines

#[test]
fn jsonl_round_trips_every_kind() {
    let (_dir, mut store, mut all) = stored_fixture();
    // A path with a newline must not split the line.
    let mut odd = vec![stored(
        WALL,
        event(
            3,
            What::FileOpen {
                path: "/tmp/evil\nname\u{7}".into(),
                access: corral_core::Access::Write,
            },
            Some(Decision::Allow),
        ),
    )];
    store.insert_assign(&mut odd).unwrap();
    all.extend(odd);

    let mut buf = Vec::new();
    let n = export_query(&store, &Query::default(), Format::Jsonl, 4, &mut buf).unwrap();
    assert_eq!(n, all.len() as u64);
    let lines = lines(&buf);
    assert_eq!(lines.len(), all.len());
    for (line, want) in lines.iter().zip(&all) {
        assert_eq!(&jsonl::parse_line(line).unwrap(), want, "{line}");
    }

    // The shape: the event's fields plus id, wall_ns, policy_at.
    let v: Value = serde_json::from_str(&lines[0]).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "decision",
            "id",
            "layer",
            "policies",
            "policy_at",
            "principal",
            "proc",
            "session",
            "ts_ns",
            "wall_ns",
            "what"
        ]
    );
    assert_eq!(v["id"], json!(all[0].id.unwrap()));
    assert_eq!(v["wall_ns"], json!(WALL));
    assert_eq!(v["session"], json!(3));
    assert_eq!(
        v["what"],
        json!({"kind": "file_open", "path": "/etc/passwd", "access": "read"})
    );
    assert_eq!(v["policy_at"], json!(["policy.cedar:3", "policy.cedar:4"]));
    assert_eq!(v["decision"], json!("allow"));
    // Telemetry: no decision, no policies, no policy_at.
    let fork: Value = serde_json::from_str(&lines[5]).unwrap();
    assert_eq!(fork["what"], json!({"kind": "fork", "child": 43}));
    for absent in ["decision", "policies", "policy_at"] {
        assert!(fork.get(absent).is_none(), "{absent} in {fork}");
    }
    // An http event as is: its what, the proxy layer, no proc when unknown.
    let refused: Value = serde_json::from_str(&lines[16]).unwrap();
    assert_eq!(refused["layer"], "proxy");
    assert_eq!(
        refused["what"],
        json!({"kind": "http", "stage": "connection", "method": "", "scheme": "https",
               "host": "evil.example", "port": 443, "path": "", "bytes_in": 0, "bytes_out": 0,
               "duration_us": 0, "error": "not a TLS handshake", "pid_known": false})
    );
    assert_eq!(refused["proc"], json!({"pid": 0, "ppid": 0, "comm": ""}));
    assert!(
        lines.last().unwrap().contains(r#""/tmp/evil\nname\u0007""#),
        "{}",
        lines.last().unwrap()
    );
}

#[test]
fn export_pages_through_everything_that_matches() {
    let (_dir, mut store) = temp_store();
    // 13 events of session 1 and 7 of session 2, interleaved.
    let mut all = Vec::new();
    for i in 0..20u64 {
        let session = if i % 3 == 2 || i == 19 { 2 } else { 1 };
        all.push(stored(WALL + i, one_of_each(session).remove(0)));
    }
    store.insert_assign(&mut all).unwrap();
    let ones: Vec<i64> = all
        .iter()
        .filter(|s| s.event.session.0 == 1)
        .map(|s| s.id.unwrap())
        .collect();
    assert_eq!(ones.len(), 13);
    let q = Query {
        session: Some(1),
        // Ignored by an export: it is everything that matches.
        limit: Some(2),
        ..Query::default()
    };
    for page in [1, 4, 12, 13, 14, 10_000] {
        let mut buf = Vec::new();
        let n = export_query(&store, &q, Format::Jsonl, page, &mut buf).unwrap();
        let got: Vec<i64> = lines(&buf)
            .iter()
            .map(|l| jsonl::parse_line(l).unwrap().id.unwrap())
            .collect();
        assert_eq!(n, 13, "page {page}");
        assert_eq!(got, ones, "page {page}");
    }
    // `after_id` is where it starts.
    let start = Query {
        after_id: Some(ones[9]),
        ..q.clone()
    };
    let mut buf = Vec::new();
    assert_eq!(
        export_query(&store, &start, Format::Ocsf, 2, &mut buf).unwrap(),
        3
    );
    let uids: Vec<String> = lines(&buf)
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["metadata"]["uid"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let want: Vec<String> = ones[10..].iter().map(i64::to_string).collect();
    assert_eq!(uids, want);
    // An empty result writes nothing.
    let mut buf = Vec::new();
    let none = Query {
        session: Some(9),
        ..Query::default()
    };
    assert_eq!(export_query(&store, &none, Format::Ocsf, 4, &mut buf).unwrap(), 0);
    assert!(buf.is_empty());
}

// ---------------------------------------------------------------------- OCSF

#[test]
fn ocsf_maps_each_kind_to_its_class_and_activity() {
    let (_dir, _store, all) = stored_fixture();
    // (class_uid, category_uid, activity_id, disposition_id) in all_kinds order.
    let want: [(u64, u64, u64, Option<u64>); 17] = [
        (1001, 1, 14, Some(1)), // file open, allow
        (1001, 1, 14, Some(2)), // file open, deny
        (1007, 1, 1, Some(1)),  // exec, would deny: let through
        (4001, 4, 1, Some(1)),  // connect tcp, allow
        (4001, 4, 1, Some(2)),  // connect udp, deny
        (1007, 1, 1, None),     // fork: launch
        (1007, 1, 2, None),     // exit: terminate
        (1007, 1, 1, None),     // exec trace: launch
        (6002, 6, 99, None),    // lost
        (6002, 6, 3, None),     // session start
        (6002, 6, 4, None),     // session end
        (6002, 6, 99, None),    // mode change
        (6002, 6, 99, None),    // policy load
        (1001, 1, 14, Some(2)), // default deny
        (6003, 6, 99, Some(2)), // mcp tools/call, deny
        (4002, 4, 6, Some(1)),  // http POST, allow
        (4002, 4, 99, Some(2)), // http connection refused
    ];
    assert_eq!(all.len(), want.len());
    for (i, (s, (class, category, activity, disposition))) in all.iter().zip(want).enumerate() {
        let v = ocsf::to_value(s, "build-host");
        let ctx = format!("event {i}: {v}");
        assert_eq!(v["class_uid"], json!(class), "{ctx}");
        assert_eq!(v["category_uid"], json!(category), "{ctx}");
        assert_eq!(v["activity_id"], json!(activity), "{ctx}");
        assert_eq!(v["type_uid"], json!(class * 100 + activity), "{ctx}");
        assert_eq!(v["disposition_id"].as_u64(), disposition, "{ctx}");
        assert_eq!(v["action_id"].as_u64(), disposition, "{ctx}");
        // Required everywhere.
        assert_eq!(v["time"], json!(1_700_000_000_123u64), "{ctx}");
        assert!(v["severity_id"].is_u64(), "{ctx}");
        assert!(v["status_id"].is_u64(), "{ctx}");
        assert!(
            v["class_name"].is_string() && v["activity_name"].is_string(),
            "{ctx}"
        );
        assert_eq!(v["metadata"]["version"], "1.1.0", "{ctx}");
        assert_eq!(v["metadata"]["product"]["name"], "corral", "{ctx}");
        assert_eq!(v["metadata"]["product"]["vendor_name"], "corral", "{ctx}");
        assert_eq!(
            v["metadata"]["product"]["version"],
            env!("CARGO_PKG_VERSION"),
            "{ctx}"
        );
        assert_eq!(v["metadata"]["uid"], json!(s.id.unwrap().to_string()), "{ctx}");
        assert_eq!(v["actor"]["session"]["uid"], "s3", "{ctx}");
        assert_eq!(v["actor"]["user"]["name"], "Agent::\"a3\"", "{ctx}");
        assert_eq!(v["device"]["hostname"], "build-host", "{ctx}");
        assert_eq!(v["unmapped"]["corral"]["principal"], "Agent::\"a3\"", "{ctx}");
        let msg = v["message"].as_str().unwrap();
        assert!(!msg.contains('\n'), "{ctx}");
        // The process, unless the proxy was not told it.
        if matches!(s.event.what, What::Http { pid_known: false, .. }) {
            assert!(v["actor"].get("process").is_none(), "{ctx}");
            assert!(msg.starts_with("s3 proxy "), "{ctx}");
        } else {
            assert_eq!(v["actor"]["process"]["pid"], 42, "{ctx}");
            assert_eq!(v["actor"]["process"]["name"], "bash", "{ctx}");
            assert_eq!(v["actor"]["process"]["file"]["path"], "/usr/bin/bash", "{ctx}");
            assert!(msg.starts_with("s3 pid 42 (bash) "), "{ctx}");
        }
        // Decisions carry the security control profile and their policies.
        if disposition.is_some() {
            assert_eq!(v["metadata"]["profiles"], json!(["security_control"]), "{ctx}");
            assert!(v["authorizations"].is_array(), "{ctx}");
        } else {
            assert!(
                v.get("authorizations").is_none() && v["metadata"].get("profiles").is_none(),
                "{ctx}"
            );
        }
    }
}

#[test]
fn ocsf_fields_of_files_processes_connections_and_decisions() {
    let (_dir, _store, all) = stored_fixture();
    let v: Vec<Value> = all.iter().map(|s| ocsf::to_value(s, "h")).collect();

    // File open, allowed by two policies with their file:line.
    assert_eq!(v[0]["file"]["path"], "/etc/passwd");
    assert_eq!(v[0]["file"]["name"], "passwd");
    assert_eq!(v[0]["status_id"], 1);
    assert_eq!(v[0]["severity_id"], 1);
    assert_eq!(
        v[0]["authorizations"],
        json!([
            {"decision": "allowed", "policy": {"uid": "policy0", "name": "policy0", "desc": "policy.cedar:3"}},
            {"decision": "allowed", "policy": {"uid": "read-tmp", "name": "read-tmp", "desc": "policy.cedar:4"}},
        ])
    );
    assert_eq!(
        v[0]["unmapped"]["corral"]["policies"],
        json!(["policy0", "read-tmp"])
    );
    assert_eq!(
        v[0]["unmapped"]["corral"]["policy_at"],
        json!(["policy.cedar:3", "policy.cedar:4"])
    );
    assert_eq!(v[0]["unmapped"]["corral"]["what"]["access"], "read");

    // Denied: blocked, failed, medium.
    assert_eq!(
        (&v[1]["action"], &v[1]["disposition"]),
        (&json!("Denied"), &json!("Blocked"))
    );
    assert_eq!(v[1]["status_id"], 2);
    assert_eq!(v[1]["severity_id"], 3);
    assert_eq!(v[1]["unmapped"]["corral"]["decision"], "deny");

    // Would deny (shadow): allowed, and says so.
    assert_eq!(v[2]["disposition_id"], 1);
    assert_eq!(v[2]["status_id"], 1);
    assert_eq!(v[2]["status_detail"], "would deny (shadow mode)");
    assert_eq!(v[2]["unmapped"]["corral"]["decision"], "would_deny");
    assert_eq!(v[2]["authorizations"][0]["decision"], "would deny (shadow mode)");
    assert_eq!(v[2]["process"]["cmd_line"], "curl https://example.com");
    assert_eq!(v[2]["process"]["file"]["path"], "/usr/bin/curl");
    assert_eq!(v[2]["process"]["name"], "curl");
    assert_eq!(v[2]["process"]["pid"], 42);

    // Connections.
    assert_eq!(v[3]["dst_endpoint"], json!({"ip": "93.184.216.34", "port": 443}));
    assert_eq!(v[3]["connection_info"]["protocol_name"], "tcp");
    assert_eq!(v[3]["connection_info"]["protocol_num"], 6);
    assert_eq!(v[3]["connection_info"]["direction_id"], 2);
    assert_eq!(v[4]["dst_endpoint"], json!({"ip": "::1", "port": 53}));
    assert_eq!(v[4]["connection_info"]["protocol_name"], "udp");
    assert_eq!(v[4]["connection_info"]["protocol_ver_id"], 6);

    // Fork: the child, launched by the actor.
    assert_eq!(v[5]["process"]["pid"], 43);
    assert_eq!(v[5]["process"]["parent_process"]["pid"], 42);
    // Exit: terminate with its code.
    assert_eq!(v[6]["exit_code"], 137);
    assert_eq!(v[6]["process"]["pid"], 42);
    // Exec trace.
    assert_eq!(v[7]["process"]["cmd_line"], "ls -la");
    // Lost events: a failure worth a look.
    assert_eq!((&v[8]["status_id"], &v[8]["severity_id"]), (&json!(2), &json!(3)));
    assert_eq!(v[8]["activity_name"], "Events Lost");
    // Session events: the application is corral.
    for e in &v[9..13] {
        assert_eq!(e["app"]["name"], "corral", "{e}");
    }
    assert_eq!(v[9]["unmapped"]["corral"]["what"]["mode"], "shadow");
    assert_eq!(v[12]["status_id"], 2);
    assert!(v[12]["status_detail"]
        .as_str()
        .unwrap()
        .contains("unknown action"));
    // Default deny: no policy to name.
    assert_eq!(v[13]["authorizations"], json!([{"decision": "denied"}]));
    assert_eq!(v[13]["status_detail"], "denied: no permit (default deny)");
}

#[test]
fn ocsf_http_activity_fields() {
    let (_dir, _store, all) = stored_fixture();
    let n = all.len();
    let req = ocsf::to_value(&all[n - 2], "h");
    let refused = ocsf::to_value(&all[n - 1], "h");

    // An allowed POST by a known process.
    assert_eq!(
        (&req["class_uid"], &req["category_uid"]),
        (&json!(4002), &json!(4))
    );
    assert_eq!(req["class_name"], "HTTP Activity");
    assert_eq!(
        (&req["activity_id"], &req["activity_name"]),
        (&json!(6), &json!("Post"))
    );
    assert_eq!(req["type_uid"], 400_206);
    assert_eq!(
        req["http_request"],
        json!({"http_method": "POST", "url": {
            "hostname": "api.anthropic.com", "path": "/v1/messages", "port": 443,
            "scheme": "https", "url_string": "https://api.anthropic.com:443/v1/messages"}})
    );
    assert_eq!(req["http_response"], json!({"code": 200}));
    // OCSF counts from the agent: out is its request body (corral's bytes_in).
    assert_eq!(
        req["traffic"],
        json!({"bytes": 35_229, "bytes_in": 34_000, "bytes_out": 1_229})
    );
    assert_eq!(req["duration"], 812);
    assert_eq!(
        req["dst_endpoint"],
        json!({"hostname": "api.anthropic.com", "port": 443})
    );
    assert_eq!(req["src_endpoint"], json!({"hostname": "h"}));
    assert_eq!(req["connection_info"]["direction"], "Outbound");
    assert_eq!(
        (&req["action_id"], &req["disposition_id"], &req["status_id"]),
        (&json!(1), &json!(1), &json!(1))
    );
    assert_eq!(
        req["authorizations"][1],
        json!({"decision": "allowed", "policy": {"uid": "read-tmp", "name": "read-tmp", "desc": "policy.cedar:4"}})
    );
    assert_eq!(req["actor"]["process"]["pid"], 42);
    assert_eq!(req["metadata"]["event_code"], "http");
    let corral = &req["unmapped"]["corral"];
    assert_eq!(
        (&corral["kind"], &corral["layer"], &corral["target"]),
        (
            &json!("http"),
            &json!("proxy"),
            &json!("POST https://api.anthropic.com:443/v1/messages")
        )
    );
    assert_eq!(corral["what"]["injected"], json!(["x-api-key"]));
    assert_eq!(corral["what"]["secrets_withheld"], json!(["GITHUB_TOKEN"]));
    assert_eq!(
        req["message"],
        "s3 pid 42 (bash) POST https://api.anthropic.com:443/v1/messages -> 200, in 1.2 KiB, \
         out 33.2 KiB, 812.3 ms, injected [x-api-key], secrets used [ANTHROPIC_API_KEY], \
         secrets withheld [GITHUB_TOKEN]: allowed by policy0 (policy.cedar:3), read-tmp (policy.cedar:4)"
    );

    // A connection refused before any request, its process unknown: no
    // method, path or response; the error is the reason, not default deny.
    assert_eq!(
        (&refused["activity_id"], &refused["activity_name"]),
        (&json!(99), &json!("Connection Refused"))
    );
    assert_eq!(
        refused["http_request"],
        json!({"url": {"hostname": "evil.example", "port": 443, "scheme": "https",
                       "url_string": "https://evil.example:443"}})
    );
    assert!(refused.get("http_response").is_none(), "{refused}");
    assert_eq!(
        (&refused["action"], &refused["disposition"]),
        (&json!("Denied"), &json!("Blocked"))
    );
    assert_eq!(refused["severity_id"], 3);
    assert_eq!(refused["status_detail"], "denied: not a TLS handshake");
    assert_eq!(refused["authorizations"], json!([{"decision": "denied"}]));
    assert!(refused["actor"].get("process").is_none(), "{refused}");
    assert_eq!(refused["actor"]["user"]["name"], "Agent::\"a3\"");
    assert_eq!(
        refused["message"],
        "s3 proxy https://evil.example:443 -> no response: DENIED; error: not a TLS handshake"
    );

    // An allowed request that failed upstream: allowed, and a failure.
    let mut failed = all[n - 2].clone();
    if let What::Http { error, status, .. } = &mut failed.event.what {
        *error = Some("upstream request failed: connection reset".into());
        *status = Some(502);
    }
    let failed = ocsf::to_value(&failed, "h");
    assert_eq!(
        (&failed["disposition_id"], &failed["status_id"]),
        (&json!(1), &json!(2))
    );
    assert_eq!(
        failed["status_detail"],
        "upstream request failed: connection reset"
    );
    assert_eq!(failed["http_response"], json!({"code": 502}));
}

#[test]
fn ocsf_http_activity_per_method() {
    let with = |stage: &str, method: &str| {
        let mut e = http_request(1);
        if let What::Http {
            stage: st, method: m, ..
        } = &mut e.what
        {
            *st = stage.into();
            *m = method.into();
        }
        e.what
    };
    for (stage, method, id, name) in [
        ("connect", "CONNECT", 1, "Connect"),
        ("request", "CONNECT", 1, "Connect"),
        ("request", "DELETE", 2, "Delete"),
        ("request", "GET", 3, "Get"),
        ("request", "HEAD", 4, "Head"),
        ("request", "OPTIONS", 5, "Options"),
        ("request", "POST", 6, "Post"),
        ("request", "PUT", 7, "Put"),
        ("request", "TRACE", 8, "Trace"),
        // 1.1.0 has no Patch; methods are case-sensitive.
        ("request", "PATCH", 99, "PATCH"),
        ("request", "get", 99, "get"),
        ("request", "", 0, "Unknown"),
        ("connection", "", 99, "Connection Refused"),
    ] {
        let (class, got_id, got_name) = ocsf::classify(&with(stage, method));
        assert_eq!(class, ocsf::HTTP_ACTIVITY, "{stage} {method}");
        assert_eq!((got_id, got_name.as_ref()), (id, name), "{stage} {method}");
    }
}

// ---------------------------------------------------------------------- OTLP

#[test]
fn otlp_http_attributes() {
    let keys = |r: &LogRecord| r.attributes.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>();

    // Every attribute an http record has: a new one must not be able to
    // carry a secret's value (only names are in the event).
    let req = otlp::record(&stored(WALL, http_request(3)), WALL);
    assert_eq!(
        keys(&req),
        [
            "corral.session",
            "corral.principal",
            "corral.kind",
            "corral.decision",
            "corral.layer",
            "process.pid",
            "process.parent_pid",
            "process.executable.path",
            "corral.http.stage",
            "http.request.method",
            "url.full",
            "url.scheme",
            "url.path",
            "server.address",
            "server.port",
            "http.response.status_code",
            "http.request.body.size",
            "http.response.body.size",
            "corral.http.duration_us",
            "corral.http.pid_known",
            "corral.http.injected_headers",
            "corral.http.secrets_used",
            "corral.http.secrets_withheld",
            "corral.target",
            "corral.policies",
            "corral.policy_at",
        ]
    );
    let want = [
        ("corral.kind", s("http")),
        ("corral.decision", s("allow")),
        ("corral.layer", s("proxy")),
        ("process.pid", Any::IntValue(42)),
        ("corral.http.stage", s("request")),
        ("http.request.method", s("POST")),
        ("url.full", s("https://api.anthropic.com:443/v1/messages")),
        ("url.scheme", s("https")),
        ("url.path", s("/v1/messages")),
        ("server.address", s("api.anthropic.com")),
        ("server.port", Any::IntValue(443)),
        ("http.response.status_code", Any::IntValue(200)),
        ("http.request.body.size", Any::IntValue(1_229)),
        ("http.response.body.size", Any::IntValue(34_000)),
        ("corral.http.duration_us", Any::IntValue(812_345)),
        ("corral.http.pid_known", Any::BoolValue(true)),
        ("corral.http.injected_headers", strs(&["x-api-key"])),
        ("corral.http.secrets_used", strs(&["ANTHROPIC_API_KEY"])),
        ("corral.http.secrets_withheld", strs(&["GITHUB_TOKEN"])),
        (
            "corral.target",
            s("POST https://api.anthropic.com:443/v1/messages"),
        ),
        ("corral.policies", strs(&["policy0", "read-tmp"])),
    ];
    for (k, v) in &want {
        assert_eq!(attr(&req, k), Some(v), "{k}");
    }
    assert_eq!(req.event_name, "corral.http");
    assert_eq!((req.severity_number, req.severity_text.as_str()), (9, "INFO"));

    // A refused connection of an unknown process: no process, method, path
    // or status; the error; a warning.
    let refused = otlp::record(&stored(WALL, http_refused(3)), WALL);
    assert_eq!(
        keys(&refused),
        [
            "corral.session",
            "corral.principal",
            "corral.kind",
            "corral.decision",
            "corral.layer",
            "corral.http.stage",
            "url.full",
            "url.scheme",
            "server.address",
            "server.port",
            "http.request.body.size",
            "http.response.body.size",
            "corral.http.duration_us",
            "corral.http.pid_known",
            "corral.http.error",
            "corral.target",
            "corral.policies",
            "corral.policy_at",
        ]
    );
    assert_eq!(attr(&refused, "url.full"), Some(&s("https://evil.example:443")));
    assert_eq!(
        attr(&refused, "corral.http.pid_known"),
        Some(&Any::BoolValue(false))
    );
    assert_eq!(
        attr(&refused, "corral.http.error"),
        Some(&s("not a TLS handshake"))
    );
    assert_eq!(attr(&refused, "corral.decision"), Some(&s("deny")));
    assert_eq!(
        (refused.severity_number, refused.severity_text.as_str()),
        (13, "WARN")
    );
    assert_eq!(
        refused.body.as_ref().and_then(|b| b.value.clone()),
        Some(s(
            "s3 proxy https://evil.example:443 -> no response: DENIED; error: not a TLS handshake"
        ))
    );
}

/// One request the collector received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    content_type: String,
    body: Vec<u8>,
}

/// A minimal OTLP/HTTP collector on 127.0.0.1: HTTP/1.1 with keep-alive,
/// `Content-Length` bodies; `answer(n)` gives the status and body of the
/// answer to the n-th request (from 0).
struct Collector {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

type Answer = dyn Fn(usize) -> (u16, Vec<u8>) + Send + Sync;

impl Collector {
    fn start(answer: impl Fn(usize) -> (u16, Vec<u8>) + Send + Sync + 'static) -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let answer: Arc<Answer> = Arc::new(answer);
        let r = Arc::clone(&received);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (r, answer) = (Arc::clone(&r), Arc::clone(&answer));
                std::thread::spawn(move || serve(conn, &r, &*answer));
            }
        });
        Collector { url, received }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Every log record of every request, in order.
    fn records(&self) -> Vec<LogRecord> {
        self.received().iter().flat_map(|r| decode(&r.body)).collect()
    }
}

fn decode(body: &[u8]) -> Vec<LogRecord> {
    ExportLogsServiceRequest::decode(body)
        .unwrap()
        .resource_logs
        .into_iter()
        .flat_map(|r| r.scope_logs)
        .flat_map(|s| s.log_records)
        .collect()
}

fn serve(conn: TcpStream, received: &Mutex<Vec<Received>>, answer: &Answer) {
    conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut out = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some("POST"), "{line}");
        let path = words.next().unwrap_or_default().to_owned();
        let (mut length, mut content_type, mut expect) = (None, String::new(), false);
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = Some(v.trim().parse::<usize>().unwrap()),
                "content-type" => content_type = v.trim().to_owned(),
                "expect" => expect = v.trim().eq_ignore_ascii_case("100-continue"),
                "transfer-encoding" => panic!("unexpected transfer-encoding {v}"),
                _ => {}
            }
        }
        if expect {
            out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").unwrap();
        }
        let mut body = vec![0; length.expect("content-length")];
        r.read_exact(&mut body).unwrap();
        let n = {
            let mut got = received.lock().unwrap();
            got.push(Received {
                path,
                content_type,
                body,
            });
            got.len() - 1
        };
        let (status, answer) = answer(n);
        let head = format!(
            "HTTP/1.1 {status} Whatever\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
            answer.len()
        );
        if out
            .write_all(head.as_bytes())
            .and_then(|()| out.write_all(&answer))
            .is_err()
        {
            return;
        }
    }
}

fn fast(url: &str) -> OtlpConfig {
    let mut cfg = OtlpConfig::new(url).unwrap();
    cfg.flush_interval = Duration::from_millis(50);
    cfg.backoff = Duration::from_millis(10);
    cfg.retries = 2;
    cfg.timeout = Duration::from_secs(5);
    cfg.host_name = "test-host".into();
    cfg
}

/// Runs a real pipeline on a temporary store with an exporter subscribed,
/// sends `n` events (all kinds in turn, at WALL + i), closes, finishes.
fn run_export(cfg: OtlpConfig, n: usize) -> (OtlpStats, PipelineStats, tempfile::TempDir, PathBuf) {
    run_export_then(cfg, n, || {})
}

/// [`run_export`], calling `before_close` once the events are sent.
fn run_export_then(
    cfg: OtlpConfig,
    n: usize,
    before_close: impl FnOnce(),
) -> (OtlpStats, PipelineStats, tempfile::TempDir, PathBuf) {
    let (dir, store) = temp_store();
    let path = store.path().to_owned();
    let p = Pipeline::start(store, 65_536);
    let handle = otlp::spawn(p.subscribe(64), cfg).unwrap();
    let tx = p.sender();
    let kinds = all_kinds(7);
    for i in 0..n {
        assert!(tx.send(stored(WALL + i as u64, kinds[i % kinds.len()].clone())));
    }
    before_close();
    let ps = p.close().unwrap();
    let t = Instant::now();
    let stats = handle.finish(Duration::from_secs(30));
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "finish took {:?}",
        t.elapsed()
    );
    (stats, ps, dir, path)
}

fn attr<'a>(r: &'a LogRecord, key: &str) -> Option<&'a Any> {
    r.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn s(v: &str) -> Any {
    Any::StringValue(v.to_owned())
}

fn strs(v: &[&str]) -> Any {
    Any::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
        values: v
            .iter()
            .map(|x| opentelemetry_proto::tonic::common::v1::AnyValue { value: Some(s(x)) })
            .collect(),
    })
}

#[test]
fn otlp_delivers_every_stored_event_with_its_attributes() {
    let c = Collector::start(|_| (200, Vec::new()));
    let n = 1_100;
    let mut cfg = fast(&c.url);
    // Only full batches go out while the pipeline is open: 512, 512; the
    // other 76 at close.
    cfg.flush_interval = Duration::from_secs(600);
    let (stats, ps, _dir, _path) = run_export_then(cfg, n, || {
        let t = Instant::now();
        while c.received().len() < 2 && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let sizes: Vec<usize> = c.received().iter().map(|r| decode(&r.body).len()).collect();
        assert_eq!(sizes, [512, 512], "full batches are sent without waiting");
    });
    assert_eq!((ps.stored, ps.dropped), (n as u64, 0));
    assert_eq!(
        stats,
        OtlpStats {
            sent: n as u64,
            ..OtlpStats::default()
        }
    );

    let received = c.received();
    assert_eq!(received.len(), 3);
    assert_eq!(decode(&received[2].body).len(), 76);
    for r in &received {
        assert_eq!(r.path, "/v1/logs");
        assert_eq!(r.content_type, "application/x-protobuf");
        let req = ExportLogsServiceRequest::decode(r.body.as_slice()).unwrap();
        let res = req.resource_logs[0].resource.as_ref().unwrap();
        let res_attr = |k: &str| {
            res.attributes
                .iter()
                .find(|kv| kv.key == k)
                .and_then(|kv| kv.value.clone())
                .and_then(|v| v.value)
        };
        assert_eq!(res_attr("service.name"), Some(s("corral")));
        assert_eq!(res_attr("host.name"), Some(s("test-host")));
        assert!(decode(&r.body).len() <= 512);
    }

    let records = c.records();
    assert_eq!(records.len(), n);
    // In store order, each at its pipeline time.
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.time_unix_nano, WALL + i as u64, "record {i}");
        assert!(r.observed_time_unix_nano >= WALL, "record {i}");
        assert_eq!(attr(r, "corral.session"), Some(&s("s7")), "record {i}");
        assert_eq!(
            attr(r, "corral.principal"),
            Some(&s("Agent::\"a7\"")),
            "record {i}"
        );
        if attr(r, "corral.http.pid_known") == Some(&Any::BoolValue(false)) {
            for absent in ["process.pid", "process.parent_pid", "process.executable.path"] {
                assert_eq!(attr(r, absent), None, "record {i}: {absent}");
            }
            assert_eq!(attr(r, "corral.layer"), Some(&s("proxy")), "record {i}");
            continue;
        }
        assert_eq!(attr(r, "process.pid"), Some(&Any::IntValue(42)), "record {i}");
        assert_eq!(
            attr(r, "process.executable.path"),
            Some(&s("/usr/bin/bash")),
            "record {i}"
        );
        let layer = match attr(r, "corral.kind") {
            Some(k) if k == &s("http") => "proxy",
            Some(k) if k == &s("mcp") => "mcp",
            _ => "bpf_lsm",
        };
        assert_eq!(attr(r, "corral.layer"), Some(&s(layer)), "record {i}");
    }

    // The denied write of ~/.ssh: WARN, every attribute.
    let deny = &records[1];
    assert_eq!((deny.severity_number, deny.severity_text.as_str()), (13, "WARN"));
    assert_eq!(attr(deny, "corral.kind"), Some(&s("file")));
    assert_eq!(attr(deny, "corral.decision"), Some(&s("deny")));
    assert_eq!(attr(deny, "corral.target"), Some(&s("/home/me/.ssh/id_ed25519")));
    assert_eq!(
        attr(deny, "corral.policies"),
        Some(&strs(&["policy0", "read-tmp"]))
    );
    assert_eq!(
        attr(deny, "corral.policy_at"),
        Some(&strs(&["policy.cedar:3", "policy.cedar:4"]))
    );
    assert_eq!(
        deny.body.as_ref().and_then(|b| b.value.clone()),
        Some(s(
            "s7 pid 42 (bash) open rw /home/me/.ssh/id_ed25519: DENIED by policy0 (policy.cedar:3), read-tmp (policy.cedar:4)"
        ))
    );
    assert_eq!(deny.event_name, "corral.file_open");
    // Would deny is a warning too; the connection names ip:port.
    assert_eq!(records[2].severity_number, 13);
    assert_eq!(
        attr(&records[2], "process.command_args"),
        Some(&strs(&["curl", "https://example.com"]))
    );
    assert_eq!(attr(&records[3], "corral.target"), Some(&s("93.184.216.34:443")));
    assert_eq!(
        (records[3].severity_number, records[3].severity_text.as_str()),
        (9, "INFO")
    );
    // Telemetry: INFO, no decision.
    let fork = &records[5];
    assert_eq!(fork.severity_number, 9);
    assert_eq!(attr(fork, "corral.decision"), None);
    assert_eq!(attr(fork, "corral.kind"), Some(&s("process")));
    assert_eq!(attr(fork, "corral.target"), Some(&s("43")));
}

#[test]
fn otlp_collector_down_counts_every_record_and_the_store_keeps_them() {
    // A port nobody listens on: connections are refused.
    let url = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let n = 700;
    let (stats, ps, _dir, path) = run_export(fast(&url), n);
    assert_eq!(
        (stats.sent, stats.failed, stats.lagged),
        (0, n as u64, 0),
        "{stats:?}"
    );
    assert!(stats.last_error.is_some());
    assert_eq!(stats.undelivered(), n as u64);
    assert_eq!((ps.stored, ps.dropped), (n as u64, 0));
    let store = Store::open(&path).unwrap();
    assert_eq!(store.count().unwrap(), n as u64);
}

#[test]
fn otlp_retries_server_errors_then_delivers() {
    let c = Collector::start(|n| (if n < 2 { 503 } else { 200 }, Vec::new()));
    let (stats, _, _dir, _path) = run_export(fast(&c.url), 10);
    assert_eq!((stats.sent, stats.failed), (10, 0), "{stats:?}");
    let received = c.received();
    assert_eq!(received.len(), 3, "two 503s, then accepted");
    assert_eq!(received[0].body, received[2].body, "the same batch is retried");
    assert_eq!(decode(&received[2].body).len(), 10);
}

#[test]
fn otlp_client_errors_are_not_retried() {
    let c = Collector::start(|_| (400, Vec::new()));
    let (stats, _, _dir, _path) = run_export(fast(&c.url), 5);
    assert_eq!((stats.sent, stats.failed), (0, 5), "{stats:?}");
    assert!(
        stats.last_error.as_deref().unwrap_or("").contains("HTTP 400"),
        "{stats:?}"
    );
    assert_eq!(c.received().len(), 1);
}

#[test]
fn otlp_partial_success_counts_rejected_records() {
    let answer = ExportLogsServiceResponse {
        partial_success: Some(ExportLogsPartialSuccess {
            rejected_log_records: 2,
            error_message: "too old".into(),
        }),
    }
    .encode_to_vec();
    let c = Collector::start(move |_| (200, answer.clone()));
    let (stats, _, _dir, _path) = run_export(fast(&c.url), 5);
    assert_eq!((stats.sent, stats.failed), (3, 2), "{stats:?}");
}

#[test]
fn otlp_finish_gives_up_while_the_pipeline_is_open() {
    let c = Collector::start(|_| (200, Vec::new()));
    let (_dir, store) = temp_store();
    let p = Pipeline::start(store, 1024);
    let handle = otlp::spawn(p.subscribe(4), fast(&c.url)).unwrap();
    assert!(p.sender().send(stored(WALL, one_of_each(1).remove(0))));
    // Sent once the flush interval passed, pipeline still open.
    let t = Instant::now();
    while c.received().is_empty() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let t = Instant::now();
    let stats = handle.finish(Duration::from_millis(200));
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "finish took {:?}",
        t.elapsed()
    );
    assert_eq!((stats.sent, stats.failed), (1, 0), "{stats:?}");
    // The pipeline does not care that its subscriber left.
    assert!(p.sender().send(stored(WALL, one_of_each(1).remove(0))));
    assert_eq!(p.close().unwrap().stored, 2);
}

#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]
use super::*;
use corral_policy::Source;
use serde_json::json;

const POLICY: &str = r#"@id("mcp-everything") permit (principal, action == Action::"McpCall", resource in MCP::Server::"everything");
@id("no-env") forbid (principal, action == Action::"McpCall", resource == MCP::Tool::"printEnv");
"#;

type Log = Arc<Mutex<Vec<McpEvent>>>;

fn authority(text: &str, mode: Mode) -> (Arc<Authority>, Log) {
    let doc = corral_policy::load(vec![Source::new("p.cedar", text)]).unwrap();
    let log: Log = Arc::default();
    let l = log.clone();
    let sink: McpSink = Arc::new(move |e| l.lock().unwrap().push(e));
    (
        Authority::new("claude", McpPolicy::new(doc), mode, Limits::default(), sink),
        log,
    )
}

fn gov(mode: Mode) -> (Governor, Log) {
    let (a, log) = authority(POLICY, mode);
    (a.governor("everything", Transport::Stdio), log)
}

fn v(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap()
}

fn call(id: i64, tool: &str) -> String {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":{"message":"hi","n":3}}}).to_string()
}

#[test]
fn a_permitted_call_is_forwarded_and_its_answer_ends_it() {
    let (mut g, log) = gov(Mode::Enforce);
    let s = g.from_client(call(1, "echo").as_bytes());
    assert!(s.reply.is_none());
    assert!(s.expects_response);
    assert_eq!(v(&s.forward.unwrap())["params"]["name"], "echo");
    assert_eq!(s.started.len(), 1);
    let id = s.started[0].id.clone();
    assert_eq!(id, format!("{}#1", g.label()));
    assert_eq!(g.in_flight().len(), 1);
    {
        let l = log.lock().unwrap();
        let e = &l[0];
        assert_eq!((e.stage, e.decision), (Stage::Request, Some(Decision::Allow)));
        assert_eq!(e.tool.as_deref(), Some("echo"));
        assert_eq!(e.call.as_deref(), Some(id.as_str()));
        assert_eq!(e.policies[0].id, "mcp-everything");
        assert_eq!(e.args.as_deref(), Some(r#"{"message":"hi","n":3}"#));
    }
    let r = g
        .from_server(br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"Echo: hi"}]}}"#);
    assert_eq!(v(&r.forward.unwrap())["result"]["content"][0]["text"], "Echo: hi");
    assert_eq!(r.finished.len(), 1);
    assert!(g.in_flight().is_empty());
    let l = log.lock().unwrap();
    let e = l.last().unwrap();
    assert_eq!(e.stage, Stage::Response);
    assert_eq!(e.method, "tools/call");
    assert_eq!(e.call.as_deref(), Some(id.as_str()));
    assert!(e.duration_us.is_some());
}

#[test]
fn a_forbidden_call_gets_an_error_naming_the_policy_and_never_reaches_the_server() {
    let (mut g, log) = gov(Mode::Enforce);
    let s = g.from_client(call(7, "printEnv").as_bytes());
    assert!(s.forward.is_none());
    assert!(s.started.is_empty());
    let r = v(&s.reply.unwrap());
    assert_eq!(r["id"], 7);
    assert_eq!(r["error"]["code"], code::DENIED);
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("no-env (p.cedar:2)"), "{msg}");
    assert_eq!(r["error"]["data"]["corral"]["policies"][0]["id"], "no-env");
    let l = log.lock().unwrap();
    assert_eq!(l[0].decision, Some(Decision::Deny));
    assert_eq!(l[0].policies[0].at, "p.cedar:2");
    // Default deny on another server's tool names no policy.
    drop(l);
    let (a, _) = authority(POLICY, Mode::Enforce);
    let mut other = a.governor("other", Transport::Http);
    let r = v(&other.from_client(call(1, "echo").as_bytes()).reply.unwrap());
    assert!(r["error"]["message"].as_str().unwrap().contains("default deny"));
}

#[test]
fn shadow_mode_forwards_and_reports_would_deny() {
    let (mut g, log) = gov(Mode::Shadow);
    let s = g.from_client(call(1, "printEnv").as_bytes());
    assert!(s.forward.is_some() && s.reply.is_none());
    assert_eq!(log.lock().unwrap()[0].decision, Some(Decision::WouldDeny));
    g.from_client(br#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#);
    let r = g
        .from_server(br#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"echo"},{"name":"printEnv"}]}}"#);
    assert_eq!(
        v(&r.forward.unwrap())["result"]["tools"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let l = log.lock().unwrap();
    assert_eq!(l.last().unwrap().hidden, ["printEnv"]);
    assert_eq!(l.last().unwrap().decision, Some(Decision::WouldDeny));
}

#[test]
fn tools_list_hides_denied_tools_and_unusable_names() {
    let (mut g, log) = gov(Mode::Enforce);
    g.from_client(br#"{"jsonrpc":"2.0","id":"l","method":"tools/list","params":{}}"#);
    let r = g.from_server(
        "{\"jsonrpc\":\"2.0\",\"id\":\"l\",\"result\":{\"tools\":[{\"name\":\"echo\"},{\"name\":\"printEnv\"},{\"name\":\"ech\u{043e}\"},{\"title\":\"x\"}],\"nextCursor\":\"c\"}}".as_bytes(),
    );
    let out = v(&r.forward.unwrap());
    let names: Vec<&str> = out["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo"]);
    assert_eq!(out["result"]["nextCursor"], "c");
    let l = log.lock().unwrap();
    assert_eq!(l.last().unwrap().hidden.len(), 3);
    assert_eq!(l.last().unwrap().policies[0].id, "no-env");
    assert_eq!(l.last().unwrap().method, "tools/list");
}

#[test]
fn a_batch_is_split_and_its_answer_carries_the_denials() {
    // On stdio the denials are answered at once.
    let (mut s, _) = gov(Mode::Enforce);
    let st = s.from_client(format!("[{},{}]", call(1, "echo"), call(2, "printEnv")).as_bytes());
    assert_eq!(v(&st.forward.unwrap()).as_array().unwrap().len(), 1);
    assert_eq!(v(&st.reply.unwrap())[0]["id"], 2);

    // Over HTTP they join the server's answer.
    let (a, _) = authority(POLICY, Mode::Enforce);
    let mut g = a.governor("everything", Transport::Http);
    let batch = format!(
        "[{},{},{}]",
        call(1, "echo"),
        call(2, "printEnv"),
        r#"{"jsonrpc":"2.0","method":"notifications/x"}"#
    );
    let s = g.from_client(batch.as_bytes());
    assert!(s.reply.is_none());
    let fwd = v(&s.forward.unwrap());
    let fwd = fwd.as_array().unwrap();
    assert_eq!(fwd.len(), 2);
    assert!(fwd.iter().all(|m| m["params"]["name"] != "printEnv"));
    // The server answers as a batch: the denial joins it.
    let r = g.from_server(br#"[{"jsonrpc":"2.0","id":1,"result":{}}]"#);
    let out = v(&r.forward.unwrap());
    let ids: Vec<i64> = out
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2]);
    assert_eq!(out[1]["error"]["code"], code::DENIED);

    // Answered one by one: the denial follows as its own message.
    let mut g = a.governor("everything", Transport::Http);
    g.from_client(format!("[{},{}]", call(1, "echo"), call(2, "printEnv")).as_bytes());
    let r = g.from_server(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
    assert_eq!(r.extra.len(), 1);
    assert_eq!(v(&r.extra[0])["id"], 2);

    // Nothing left to forward: the client gets the errors at once.
    let (mut g, _) = gov(Mode::Enforce);
    let s = g.from_client(format!("[{}]", call(3, "printEnv")).as_bytes());
    assert!(s.forward.is_none());
    assert_eq!(v(&s.reply.unwrap())[0]["id"], 3);
}

#[test]
fn malformed_traffic_is_refused_not_forwarded() {
    let (mut g, log) = gov(Mode::Enforce);
    for (bad, code_) in [
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"printEnv"}}"#.to_string(), code::PARSE_ERROR),
        ("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"printEnv\u{200b}\"}}".to_string(), code::INVALID_PARAMS),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":[1]}}"#.to_string(), code::INVALID_PARAMS),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["printEnv"]}"#.to_string(), code::INVALID_PARAMS),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#.to_string(), code::INVALID_PARAMS),
        ("not json".to_string(), code::PARSE_ERROR),
    ] {
        let s = g.from_client(bad.as_bytes());
        assert!(s.forward.is_none(), "{bad}");
        assert_eq!(v(&s.reply.unwrap())["error"]["code"], code_, "{bad}");
    }
    assert!(log
        .lock()
        .unwrap()
        .iter()
        .all(|e| e.decision == Some(Decision::Deny)));
    // Garbage from the server is dropped.
    assert!(g.from_server(b"{oops").forward.is_none());
    assert_eq!(log.lock().unwrap().last().unwrap().stage, Stage::Refused);
}

#[test]
fn a_request_id_in_flight_cannot_be_reused() {
    let (mut g, _) = gov(Mode::Enforce);
    assert!(g
        .from_client(br#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#)
        .forward
        .is_some());
    let s = g.from_client(call(5, "echo").as_bytes());
    assert!(s.forward.is_none());
    assert!(v(&s.reply.unwrap())["error"]["message"]
        .as_str()
        .unwrap()
        .contains("already in flight"));
}

#[test]
fn cancelling_a_call_ends_it() {
    let (mut g, _) = gov(Mode::Enforce);
    g.from_client(call(9, "echo").as_bytes());
    let s =
        g.from_client(br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":9}}"#);
    assert!(s.forward.is_some());
    assert_eq!(s.finished.len(), 1);
    assert!(g.in_flight().is_empty());
}

#[test]
fn server_requests_and_client_answers_are_paired() {
    let (mut g, log) = gov(Mode::Enforce);
    let r = g.from_server(br#"{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{}}"#);
    assert!(r.forward.is_some());
    let s = g.from_client(br#"{"jsonrpc":"2.0","id":"s1","result":{"content":{}}}"#);
    assert!(s.forward.is_some() && !s.expects_response);
    let l = log.lock().unwrap();
    assert_eq!(l.last().unwrap().method, "sampling/createMessage");
    assert_eq!(l.last().unwrap().direction, Direction::ToServer);
}

#[test]
fn without_mcp_policies_everything_is_observed() {
    let (a, log) = authority(
        "permit (principal, action == Action::\"ProcessExec\", resource);",
        Mode::Enforce,
    );
    let mut g = a.governor("everything", Transport::Stdio);
    assert!(g.from_client(call(1, "printEnv").as_bytes()).forward.is_some());
    assert_eq!(log.lock().unwrap()[0].decision, None);
    g.from_client(br#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#);
    let r = g.from_server(br#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"printEnv"}]}}"#);
    assert_eq!(
        v(&r.forward.unwrap())["result"]["tools"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_policy_swap_applies_to_the_next_message() {
    let (a, _) = authority(POLICY, Mode::Enforce);
    let mut g = a.governor("everything", Transport::Stdio);
    assert!(g.from_client(call(1, "printEnv").as_bytes()).reply.is_some());
    let doc = corral_policy::load(vec![Source::new(
        "q.cedar",
        "permit (principal, action == Action::\"McpCall\", resource);",
    )])
    .unwrap();
    a.set_policy(McpPolicy::new(doc));
    assert!(g.from_client(call(2, "printEnv").as_bytes()).forward.is_some());
}

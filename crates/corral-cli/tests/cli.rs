//! End-to-end tests of the `corral` binary: exit codes, diagnostics with
//! file:line:col, compiled plans, explain.

// Test code: a panic is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

fn corral(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(args)
        .output()
        .expect("run corral")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn leash_default_policy_is_valid_and_compiles_to_allow_everything_tables() {
    let f = fixture("leash-default.cedar");
    let o = corral(&["policy", "check", &f]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("3 policies, 0 errors, 0 warnings"), "{out}");

    let o = corral(&["policy", "compile", &f, "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let p = &plan["principals"][0];
    // FileOpenReadOnly/ReadWrite and exec: `/` allows everything below it, by the right policy.
    for (table, policy) in [("file_read", 1), ("file_write", 1), ("exec", 0)] {
        let root = &p[table]["entries"]["/"]["dir"];
        assert_eq!(root["files"]["decision"], "allow", "{table}: {root}");
        assert_eq!(root["files"]["by"][0], policy, "{table}");
    }
    // Direct connections to any v4/v6 address are allowed by the third policy (`Host::"*"`).
    let tcp = &p["net"][0];
    assert_eq!(tcp["protocol"], "tcp");
    for e in tcp["entries"].as_array().unwrap() {
        assert_eq!(e["verdicts"]["0"]["decision"], "allow", "{e}");
        assert_eq!(e["verdicts"]["0"]["by"][0], 2);
    }
    assert_eq!(plan["proxy"]["host_rules"][0]["enforced_by"], "proxy+kernel");
}

#[test]
fn mcp_tool_forbid_is_valid_and_evaluated_by_the_mcp_layer() {
    let f = fixture("mcp-forbid.cedar");
    let o = corral(&["policy", "check", &f]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let (out, _) = text(&corral(&["policy", "compile", &f]));
    assert!(out.contains("mcp      policy1 ("), "{out}");
    // The forbid decides: the tool is denied on that server, allowed elsewhere.
    let deny = corral(&[
        "policy",
        "explain",
        &f,
        "--action",
        "McpCall",
        "--resource",
        "execute-shell",
        "-c",
        "server=mcp.example.com",
        "--exit-code",
    ]);
    let (out, _) = text(&deny);
    assert_eq!(deny.status.code(), Some(2), "{out}");
    assert!(out.contains("forbid `policy1`"), "{out}");
    let allow = corral(&[
        "policy",
        "explain",
        &f,
        "--action",
        "McpCall",
        "--resource",
        "execute-shell",
        "-c",
        "server=other.example.com",
        "--exit-code",
    ]);
    assert_eq!(allow.status.code(), Some(0), "{:?}", text(&allow));
}

#[test]
fn http_rewrite_values_are_redacted_in_compile_output() {
    let f = fixture("rewrite.cedar");
    assert_eq!(corral(&["policy", "check", &f]).status.code(), Some(0));
    let (out, _) = text(&corral(&["policy", "compile", &f]));
    assert!(
        out.contains("on api.internal set `Authorization: <redacted>`"),
        "{out}"
    );
    let o = corral(&["policy", "compile", &f, "--json"]);
    let json = String::from_utf8_lossy(&o.stdout).into_owned();
    let plan: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(plan["proxy"]["rewrites"][0]["value"], "<redacted>");
    assert_eq!(plan["proxy"]["rewrites"][0]["header"], "Authorization");
    for shown in [&out, &json] {
        assert!(!shown.contains("prod secret"), "{shown}");
    }
}

fn expect_error(fixture_name: &str, location: &str, code: &str) {
    let f = fixture(fixture_name);
    let o = corral(&["policy", "check", &f]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    let want = format!("{f}:{location}: error[{code}]");
    assert!(err.contains(&want), "expected `{want}` in:\n{err}");
    // A source snippet with a caret follows.
    assert!(err.contains(" | ") && err.contains('^'), "{err}");
}

#[test]
fn syntax_error_points_at_line_and_column() {
    expect_error("bad-syntax.cedar", "4:52", "parse");
}

#[test]
fn unknown_action_points_at_line_and_column() {
    expect_error("bad-action.cedar", "2:30", "validation");
}

#[test]
fn wrong_entity_type_in_a_forbid_is_an_error() {
    expect_error("bad-entity.cedar", "3:1", "forbid-never-applies");
}

#[test]
fn type_error_in_condition_points_at_line_and_column() {
    expect_error("bad-type.cedar", "2:8", "validation");
}

#[test]
fn kernel_inexpressible_network_condition_is_rejected_not_dropped() {
    expect_error("bad-arith.cedar", "2:21", "kernel-unsupported");
}

#[test]
fn likely_mistakes_are_warnings_with_positions() {
    let f = fixture("warnings.cedar");
    let o = corral(&["policy", "check", &f]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    for (loc, code) in [
        ("1:20", "never-applies"),
        ("2:21", "dir-without-slash"),
        ("3:68", "never-applies"),
        ("4:1", "shadowed-permit"),
    ] {
        assert!(
            err.contains(&format!("{f}:{loc}: warning[{code}]")),
            "{loc} {code} missing:\n{err}"
        );
    }
    assert_eq!(
        corral(&["policy", "check", &f, "--deny-warnings"]).status.code(),
        Some(1)
    );
    let json = corral(&["policy", "check", &f, "--json"]);
    let diags: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(diags.as_array().unwrap().len(), 4);
    assert_eq!(diags[1]["code"], "dir-without-slash");
    assert_eq!(diags[1]["line"], 2);
}

#[test]
fn default_policy_checks_clean_and_explains_with_lines() {
    let o = corral(&[
        "policy",
        "check",
        "--workspace",
        "/work/proj",
        "--home",
        "/home/dev",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("0 errors, 0 warnings"), "{out}{err}");

    let o = corral(&[
        "policy",
        "explain",
        "--workspace",
        "/work/proj",
        "--home",
        "/home/dev",
        "--principal",
        "claude",
        "--action",
        "FileOpenReadOnly",
        "--resource",
        "/home/dev/.ssh/id_ed25519",
        "--exit-code",
    ]);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("decision: DENY"), "{out}");
    assert!(
        out.contains("forbid `forbid-secrets` at <default policy>:"),
        "{out}"
    );
    assert!(out.contains("kernel plan (file read): deny"), "{out}");

    let o = corral(&[
        "policy",
        "explain",
        "--workspace",
        "/work/proj",
        "--home",
        "/home/dev",
        "--action",
        "FileOpenReadWrite",
        "--resource",
        "/work/proj/src/main.rs",
        "--exit-code",
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));

    let o = corral(&[
        "policy",
        "explain",
        "--workspace",
        "/work/proj",
        "--home",
        "/home/dev",
        "--action",
        "NetworkConnect",
        "--resource",
        "evil.example:443",
        "--exit-code",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["determining"].as_array().unwrap().len(), 0);
}

#[test]
fn default_policy_sends_an_agent_key_only_to_its_provider() {
    let explain = |host: &str| {
        corral(&[
            "policy",
            "explain",
            "--workspace",
            "/work/proj",
            "--home",
            "/home/dev",
            "--principal",
            "claude",
            "--action",
            "SecretUse",
            "--resource",
            host,
            "-c",
            "secret=ANTHROPIC_API_KEY",
            "--exit-code",
        ])
    };
    let o = explain("api.anthropic.com");
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(
        out.contains(r#"Action::"SecretUse" Host::"api.anthropic.com" secret="ANTHROPIC_API_KEY" port=443"#),
        "{out}"
    );
    assert!(
        out.contains("permit `secret-agent-keys` at <default policy>:"),
        "{out}"
    );
    let o = explain("api.openai.com:443");
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("no permit matches: denied by default"), "{out}");
    // The plan lists the rule as decided by the egress proxy.
    let (out, _) = text(&corral(&[
        "policy",
        "compile",
        "--workspace",
        "/work/proj",
        "--home",
        "/home/dev",
    ]));
    assert!(
        out.contains("secret   secret-agent-keys (<default policy>:")
            && out.contains("placeholder secrets are substituted by the egress proxy"),
        "{out}"
    );
}

#[test]
fn explain_rejects_malformed_questions_clearly() {
    let o = corral(&[
        "policy",
        "explain",
        "--action",
        "FileOpenReadOnly",
        "--resource",
        "relative/path",
    ]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("path `relative/path` is not absolute"), "{err}");
    let o = corral(&["policy", "explain", "--action", "Frobnicate", "--resource", "/x"]);
    assert!(text(&o).1.contains("unknown action `Frobnicate`"));
}

#[test]
fn schema_and_default_print_valid_cedar() {
    let o = corral(&["policy", "schema"]);
    let (out, _) = text(&o);
    assert!(out.contains("action FileOpenReadOnly, FileOpenReadWrite in [FileOpen]"));
    let o = corral(&["policy", "default", "--workspace", "/w", "--home", "/h"]);
    let (out, _) = text(&o);
    assert!(
        out.contains("Dir::\"/w/\"") && out.contains("Dir::\"/h/.ssh/\""),
        "{out}"
    );
    assert!(!out.contains("${"), "unsubstituted placeholder");
    let o = corral(&["policy", "default", "--workspace", "/w\"x"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn help_lists_only_real_subcommands() {
    let (out, _) = text(&corral(&["--help"]));
    assert!(out.contains("policy"));
    let (out, _) = text(&corral(&["policy", "--help"]));
    for sub in ["check", "explain", "compile", "schema", "default", "suggest"] {
        assert!(out.contains(sub), "{sub}: {out}");
    }
}

#[test]
fn leash_mixed_dir_file_sets_are_accepted_with_a_warning() {
    // Guards the relaxation against a cedar-policy upgrade that changes its error.
    let f = fixture("mixed-set.cedar");
    let o = corral(&["policy", "check", &f]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(err.contains(&format!("{f}:3:20: warning[mixed-set]")), "{err}");
    let o = corral(&[
        "policy",
        "explain",
        &f,
        "--action",
        "FileOpenReadWrite",
        "--resource",
        "/root/.claude.json",
        "--exit-code",
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
}

#[test]
fn host_literals_that_can_never_match_are_reported() {
    let f = fixture("bad-hosts.cedar");
    let o = corral(&["policy", "check", &f]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    for (loc, what) in [
        ("2:21", "error[host-never-matches]"),
        ("2:39", "error[host-never-matches]"),
        ("2:59", "error[host-never-matches]"),
        ("4:20", "warning[never-applies]"),
        ("4:72", "warning[ip-never-matches]"),
    ] {
        assert!(
            err.contains(&format!("{f}:{loc}: {what}")),
            "{loc} {what}:\n{err}"
        );
    }
}

#[test]
fn rewrite_values_come_from_when_clauses_only() {
    let f = fixture("rewrite-unless.cedar");
    let o = corral(&["policy", "check", &f]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("error[rewrite-shape]"), "{err}");
}

#[test]
fn forbid_without_permit_on_a_proxy_action_warns_it_denies_everything() {
    let dir = std::env::temp_dir().join(format!("corral-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("mcp.cedar");
    std::fs::write(
        &f,
        "forbid (principal, action == Action::\"McpCall\", resource == MCP::Tool::\"x\");\n",
    )
    .unwrap();
    let o = corral(&["policy", "check", f.to_str().unwrap()]);
    let (_, err) = text(&o);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(err.contains(":1:1: warning[denies-everything]"), "{err}");
}

/// `explain` shows what the MCP layer does beyond Cedar: a tool allowlist
/// does not refuse `initialize` (only a forbid would), and `--exit-code`
/// follows the layer.
#[test]
fn explain_shows_the_mcp_layers_rules() {
    let dir = std::env::temp_dir().join(format!("corral-cli-mcp-explain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("mcp.cedar");
    std::fs::write(
        &f,
        "@id(\"echo-only\") permit (principal, action == Action::\"McpCall\", resource == MCP::Tool::\"echo\");\n",
    )
    .unwrap();
    let f = f.to_str().unwrap();
    let ask = |resource: &str, method: &str| {
        corral(&[
            "policy",
            "explain",
            f,
            "--principal",
            "claude",
            "--action",
            "McpCall",
            "--resource",
            resource,
            "-c",
            "server=everything",
            "-c",
            &format!("method={method}"),
            "--exit-code",
        ])
    };
    let init = ask("everything", "initialize");
    let (out, err) = text(&init);
    assert_eq!(init.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("decision: DENY"), "{out}");
    assert!(out.contains("MCP layer: ALLOW (no forbid applies"), "{out}");
    let other = ask("get-env", "tools/call");
    let (out, _) = text(&other);
    assert_eq!(other.status.code(), Some(2), "{out}");
    assert!(!out.contains("MCP layer"), "{out}");
    let echo = ask("echo", "tools/call");
    assert_eq!(echo.status.code(), Some(0), "{}", text(&echo).0);
    std::fs::remove_dir_all(&dir).unwrap();
}

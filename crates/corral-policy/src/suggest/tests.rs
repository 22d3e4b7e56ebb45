// Test code: a panic is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use super::*;
use crate::load::PolicyDoc;
use corral_core::{Access, Decision, Layer, Proc, Transport, What};

const HOME: &str = "/home/dev";

/// A small custom policy: read the system, write /tmp, run /usr/bin, one
/// forbid, no secrets rule.
const CUSTOM: &str = r#"@id("read-all")
permit (principal, action == Action::"FileOpenReadOnly", resource)
when { resource in Dir::"/" };

@id("write-tmp")
permit (principal, action in Action::"FileOpen", resource)
when { resource in Dir::"/tmp/" };

@id("exec-usr")
permit (principal, action == Action::"ProcessExec", resource)
when { resource in Dir::"/usr/bin/" };

@id("no-etc-writes")
forbid (principal, action == Action::"FileOpenReadWrite", resource)
when { resource in Dir::"/etc/" };

@id("no-hidden")
forbid (principal, action == Action::"FileOpenReadOnly", resource)
when { resource in Dir::"/srv/hidden/" };
"#;

fn ev(what: What, decision: Decision, policies: &[&str]) -> Event {
    Event {
        session: SessionId(7),
        principal: "agent".into(),
        ts_ns: 1,
        proc: Proc::default(),
        what,
        decision: Some(decision),
        layer: Layer::Fanotify,
        policies: policies.iter().map(|p| p.to_string()).collect(),
        mcp_call: None,
    }
}

fn write(path: &str) -> Event {
    ev(
        What::FileOpen {
            path: path.into(),
            access: Access::Write,
        },
        Decision::WouldDeny,
        &[],
    )
}

fn read(path: &str) -> Event {
    ev(
        What::FileOpen {
            path: path.into(),
            access: Access::Read,
        },
        Decision::Deny,
        &[],
    )
}

fn exec(path: &str) -> Event {
    ev(
        What::Exec {
            path: path.into(),
            argv: None,
        },
        Decision::WouldDeny,
        &[],
    )
}

fn connect(ip: &str, port: u16, transport: Transport) -> Event {
    ev(
        What::Connect {
            ip: ip.parse().unwrap(),
            port,
            transport,
        },
        Decision::Deny,
        &[],
    )
}

fn custom() -> Source {
    Source::new("custom.cedar", CUSTOM)
}

fn run(events: &[Event], current: &Source, opts: &Options<'_>) -> Suggestion {
    suggest(events, current, opts).unwrap_or_else(|e| panic!("suggest failed: {e} ({e:?})"))
}

/// The suggested policy, loaded, with an evaluator.
fn load_suggested(s: &Suggestion) -> (PolicyDoc, Evaluator) {
    let checked = check(vec![Source::new("suggested.cedar", s.policy.clone())]);
    assert!(
        checked.ok(),
        "does not validate: {:#?}\n{}",
        checked.diagnostics,
        s.policy
    );
    let doc = checked.doc.expect("loaded");
    let ev = Evaluator::new(&doc);
    (doc, ev)
}

fn allowed(ev: &Evaluator, req: &Request) -> bool {
    ev.decide(req).unwrap().allowed
}

fn file(path: &str, write: bool) -> Request {
    Request::File {
        principal: "agent".into(),
        write,
        path: path.into(),
        is_dir: false,
    }
}

fn dir(path: &str) -> Request {
    Request::File {
        principal: "agent".into(),
        write: false,
        path: path.into(),
        is_dir: true,
    }
}

fn run_exec(path: &str) -> Request {
    Request::Exec {
        principal: "agent".into(),
        path: path.into(),
        argv: vec![path.into()],
    }
}

fn net(ip: &str, port: u16, protocol: Protocol) -> Request {
    Request::Net {
        principal: "agent".into(),
        hostname: None,
        ip: ip.parse().unwrap(),
        port,
        protocol,
    }
}

fn rule(s: &Suggestion, action: Action) -> &Rule {
    s.added
        .iter()
        .find(|r| r.action == action)
        .unwrap_or_else(|| panic!("no {} rule in {:#?}", action.name(), s.added))
}

#[test]
fn suggest_dir_level_from_the_threshold_exact_below_it() {
    let events = [
        write("/data/out/a"),
        write("/data/out/b"),
        write("/data/out/c"),
        write("/data/out/a"),
        write("/data/few/x"),
        write("/data/few/y"),
    ];
    let s = run(&events, &custom(), &Options::new(HOME));
    let r = rule(&s, Action::FileOpenReadWrite);
    assert_eq!(
        r.entries,
        [
            Entry::Tree("/data/out/".into()),
            Entry::File("/data/few/x".into()),
            Entry::File("/data/few/y".into()),
        ]
    );
    assert_eq!(r.events, 6);
    assert_eq!(s.covered, 6);
    assert_eq!(r.id, "suggested-FileOpenReadWrite-1");
    assert!(
        r.text
            .contains("// suggested by corral from session s7 (6 events)"),
        "{}",
        r.text
    );
    assert!(r.text.contains("principal == Agent::\"agent\""), "{}", r.text);

    let (_, ev) = load_suggested(&s);
    for p in [
        "/data/out/a",
        "/data/out/b",
        "/data/out/c",
        "/data/few/x",
        "/data/few/y",
    ] {
        assert!(allowed(&ev, &file(p, true)), "{p} not allowed");
    }
    // The tree covers new files in /data/out/; /data/few/ stays exact.
    assert!(allowed(&ev, &file("/data/out/new", true)));
    assert!(!allowed(&ev, &file("/data/few/z", true)));
    assert!(!allowed(&ev, &file("/data/other/a", true)));
    assert!(!allowed(&ev, &file("/data/outx", true)));

    // A lower threshold makes /data/few/ a tree too; a higher one none.
    let mut o = Options::new(HOME);
    o.min_files_for_dir = 2;
    let s = run(&events, &custom(), &o);
    assert_eq!(
        rule(&s, Action::FileOpenReadWrite).entries,
        [Entry::Tree("/data/few/".into()), Entry::Tree("/data/out/".into())]
    );
    o.min_files_for_dir = 4;
    let s = run(&events, &custom(), &o);
    assert!(rule(&s, Action::FileOpenReadWrite)
        .entries
        .iter()
        .all(|e| matches!(e, Entry::File(_))));
}

#[test]
fn suggest_nested_trees_collapse_and_root_is_never_a_tree() {
    let events = [
        write("/data/a"),
        write("/data/b"),
        write("/data/c"),
        write("/data/sub/1"),
        write("/data/sub/2"),
        write("/data/sub/3"),
        write("/x"),
        write("/y"),
        write("/z"),
    ];
    let s = run(&events, &custom(), &Options::new(HOME));
    assert_eq!(
        rule(&s, Action::FileOpenReadWrite).entries,
        [
            Entry::Tree("/data/".into()),
            Entry::File("/x".into()),
            Entry::File("/y".into()),
            Entry::File("/z".into()),
        ]
    );
    let (_, ev) = load_suggested(&s);
    assert!(!allowed(&ev, &file("/w", true)));
}

#[test]
fn suggest_skips_secrets_unless_allowed() {
    let events = [
        read("/home/dev/.ssh/id_ed25519"),
        read("/home/dev/.netrc"),
        read("/etc/shadow"),
        write("/home/dev/notes"),
        write("/home/dev/a"),
        write("/home/dev/b"),
    ];
    // The custom policy permits reading everything: make the reads denied
    // by a policy that only reads /usr.
    let current = Source::new(
        "narrow.cedar",
        "@id(\"read-usr\")\npermit (principal, action == Action::\"FileOpenReadOnly\", resource in Dir::\"/usr/\");\n",
    );
    let s = run(&events, &current, &Options::new(HOME));
    let secrets: Vec<(&str, &str)> = s
        .skipped
        .iter()
        .map(|k| (k.target.as_str(), k.reason.code()))
        .collect();
    assert_eq!(
        secrets,
        [
            ("/etc/shadow", "secret"),
            ("/home/dev/.netrc", "secret"),
            ("/home/dev/.ssh/id_ed25519", "secret")
        ]
    );
    assert!(s.skipped.iter().any(|k| k.reason
        == SkipReason::Secret {
            secret: "Dir::\"/home/dev/.ssh/\"".into()
        }));
    // Three writes in the home, which holds secrets: exact files, no tree.
    assert_eq!(
        rule(&s, Action::FileOpenReadWrite).entries,
        [
            Entry::File("/home/dev/a".into()),
            Entry::File("/home/dev/b".into()),
            Entry::File("/home/dev/notes".into()),
        ]
    );
    assert!(s.added.iter().all(|r| r.action != Action::FileOpenReadOnly));
    let (_, ev) = load_suggested(&s);
    assert!(!allowed(&ev, &file("/home/dev/.ssh/id_ed25519", false)));
    assert!(!allowed(&ev, &file("/home/dev/.ssh/config", true)));

    let mut o = Options::new(HOME);
    o.allow_secrets = true;
    let s = run(&events, &current, &o);
    assert!(s.skipped.is_empty(), "{:#?}", s.skipped);
    let r = rule(&s, Action::FileOpenReadOnly);
    assert!(r
        .entries
        .contains(&Entry::File("/home/dev/.ssh/id_ed25519".into())));
    assert_eq!(
        rule(&s, Action::FileOpenReadWrite).entries,
        [Entry::Tree("/home/dev/".into())]
    );
    let (_, ev) = load_suggested(&s);
    assert!(allowed(&ev, &file("/home/dev/.ssh/id_ed25519", false)));
    assert!(allowed(&ev, &file("/etc/shadow", false)));
}

#[test]
fn suggest_secrets_come_from_the_template_for_the_given_home() {
    let s = template_secrets("/root").unwrap();
    assert!(s.contains(&Secret::Dir("/root/.ssh/".into())));
    assert!(s.contains(&Secret::File("/root/.git-credentials".into())));
    assert!(s.contains(&Secret::File("/etc/shadow".into())));
    assert!(s.contains(&Secret::Dir("/etc/ssh/".into())));
    assert!(s.iter().all(|x| !x.literal().contains("${")));
    assert!(matches!(template_secrets("/"), Err(SuggestError::BadHome(_))));
    assert!(matches!(
        template_secrets("relative"),
        Err(SuggestError::BadHome(_))
    ));
    assert!(matches!(template_secrets("/a\"b"), Err(SuggestError::BadHome(_))));

    let rendered = crate::default_policy::render("/work/proj", "/home/dev").unwrap();
    assert_eq!(home_from_policy(&rendered).as_deref(), Some("/home/dev"));
    let rendered = crate::default_policy::render("/work/proj", "/root").unwrap();
    assert_eq!(home_from_policy(&rendered).as_deref(), Some("/root"));
    assert_eq!(home_from_policy(CUSTOM), None);
}

#[test]
fn suggest_skips_what_a_forbid_denies() {
    let events = [
        // Named by the event (the kernel's determining policy).
        ev(
            What::FileOpen {
                path: "/etc/hosts".into(),
                access: Access::Write,
            },
            Decision::Deny,
            &["no-etc-writes"],
        ),
        // Not named by the event, but the current policy forbids it.
        read("/srv/hidden/key"),
        read("/srv/hidden/key"),
        write("/srv/data/ok"),
    ];
    let s = run(&events, &custom(), &Options::new(HOME));
    assert_eq!(s.skipped.len(), 2, "{:#?}", s.skipped);
    let etc = s.skipped.iter().find(|k| k.target == "/etc/hosts").unwrap();
    assert_eq!(
        etc.reason,
        SkipReason::Forbid {
            id: "no-etc-writes".into(),
            at: "custom.cedar:14".into()
        }
    );
    let hidden = s.skipped.iter().find(|k| k.target == "/srv/hidden/key").unwrap();
    assert_eq!(hidden.events, 2);
    assert_eq!(
        hidden.reason,
        SkipReason::Forbid {
            id: "no-hidden".into(),
            at: "custom.cedar:18".into()
        }
    );
    assert!(hidden
        .reason
        .to_string()
        .contains("`no-hidden` at custom.cedar:18"));
    assert_eq!(s.added.len(), 1);
    assert_eq!(s.covered, 1);
}

#[test]
fn suggest_net_and_exec_rules() {
    let events = [
        connect("10.1.2.3", 5432, Transport::Tcp),
        connect("10.1.2.3", 5432, Transport::Tcp),
        connect("2001:db8::1", 443, Transport::Tcp),
        connect("::ffff:10.9.9.9", 53, Transport::Udp),
        exec("/opt2/tools/a"),
        exec("/opt2/tools/b"),
        exec("/opt2/tools/c"),
        exec("/srv/bin/run"),
        // Allowed already: needs nothing.
        ev(
            What::Exec {
                path: "/usr/bin/env".into(),
                argv: None,
            },
            Decision::Allow,
            &["exec-usr"],
        ),
    ];
    let s = run(&events, &custom(), &Options::new(HOME));
    let n = rule(&s, Action::NetworkConnect);
    assert_eq!(
        n.entries,
        [
            Entry::Host {
                host_port: "10.1.2.3:5432".into(),
                protocol: Protocol::Tcp
            },
            Entry::Host {
                host_port: "10.9.9.9:53".into(),
                protocol: Protocol::Udp
            },
            Entry::Host {
                host_port: "[2001:db8::1]:443".into(),
                protocol: Protocol::Tcp
            },
        ]
    );
    assert_eq!(n.events, 4);
    assert!(n.text.contains("Host::\"[2001:db8::1]:443\""), "{}", n.text);
    let x = rule(&s, Action::ProcessExec);
    assert_eq!(
        x.entries,
        [
            Entry::Tree("/opt2/tools/".into()),
            Entry::File("/srv/bin/run".into())
        ]
    );
    assert_eq!(s.covered, 8);

    let (_, ev) = load_suggested(&s);
    assert!(allowed(&ev, &net("10.1.2.3", 5432, Protocol::Tcp)));
    assert!(allowed(&ev, &net("2001:db8::1", 443, Protocol::Tcp)));
    assert!(allowed(&ev, &net("10.9.9.9", 53, Protocol::Udp)));
    assert!(allowed(&ev, &run_exec("/opt2/tools/d")));
    assert!(allowed(&ev, &run_exec("/srv/bin/run")));
    // Another port, protocol, address or directory: still denied.
    assert!(!allowed(&ev, &net("10.1.2.3", 5433, Protocol::Tcp)));
    assert!(!allowed(&ev, &net("10.1.2.3", 5432, Protocol::Udp)));
    assert!(!allowed(&ev, &net("10.1.2.4", 5432, Protocol::Tcp)));
    assert!(!allowed(&ev, &net("2001:db8::2", 443, Protocol::Tcp)));
    assert!(!allowed(&ev, &run_exec("/srv/bin/other")));
    assert!(!allowed(&ev, &run_exec("/opt2/toolsx")));
    // The exec rule grants no file access, the file rules no exec.
    assert!(!allowed(&ev, &file("/opt2/tools/a", true)));
}

#[test]
fn suggest_output_validates_and_covers_every_request() {
    let events = [
        write("/data/out/a"),
        write("/data/out/b"),
        write("/data/out/c"),
        exec("/srv/bin/run"),
        connect("10.1.2.3", 5432, Transport::Tcp),
        read("/srv/hidden/key"),
    ];
    for current in [
        custom(),
        Source::new(
            "<default policy>",
            crate::default_policy::render("/work/proj", HOME).unwrap(),
        ),
    ] {
        let s = run(&events, &current, &Options::new(HOME));
        let checked = check(vec![Source::new("x.cedar", s.policy.clone())]);
        assert!(checked.ok(), "{:#?}", checked.diagnostics);
        let ours: Vec<&str> = s.added.iter().map(|r| r.id.as_str()).collect();
        assert!(
            !checked
                .diagnostics
                .iter()
                .any(|d| d.policy.as_deref().is_some_and(|p| ours.contains(&p))),
            "findings on the suggested rules: {:#?}",
            checked.diagnostics
        );
        assert!(s.policy.starts_with(&*current.text));
        let (_, ev) = load_suggested(&s);
        for r in [
            file("/data/out/a", true),
            file("/data/out/b", true),
            file("/data/out/c", true),
            run_exec("/srv/bin/run"),
            net("10.1.2.3", 5432, Protocol::Tcp),
        ] {
            assert!(allowed(&ev, &r), "{r:?} not allowed by\n{}", s.policy);
        }
        // What the current policy allowed, it still allows, and vice versa
        // outside the suggestion.
        assert!(!allowed(&ev, &file("/data/elsewhere", true)));
        assert!(!allowed(&ev, &net("10.1.2.3", 22, Protocol::Tcp)));
    }
}

#[test]
fn suggest_directories_opened_themselves_are_exact() {
    let events = [
        // /srv/a is a directory: a path below it was seen.
        read("/srv/a"),
        ev(
            What::FileOpen {
                path: "/srv/a/f".into(),
                access: Access::Read,
            },
            Decision::Allow,
            &[],
        ),
        // Unknown kind: both exact forms.
        read("/srv/b"),
        // Known through the caller.
        read("/srv/c"),
    ];
    let current = Source::new(
        "narrow.cedar",
        "@id(\"read-usr\")\npermit (principal, action == Action::\"FileOpenReadOnly\", resource in Dir::\"/usr/\");\n",
    );
    let mut o = Options::new(HOME);
    o.min_files_for_dir = 10;
    let kind = |p: &str| {
        if p == "/srv/c" {
            PathKind::File
        } else {
            PathKind::Unknown
        }
    };
    o.path_kind = &kind;
    let s = run(&events, &current, &o);
    let r = rule(&s, Action::FileOpenReadOnly);
    assert_eq!(
        r.entries,
        [
            Entry::File("/srv/b".into()),
            Entry::File("/srv/c".into()),
            Entry::Dir("/srv/a/".into()),
            Entry::Dir("/srv/b/".into()),
        ]
    );
    assert!(r.text.contains("resource == Dir::\"/srv/a/\""), "{}", r.text);
    let (_, ev) = load_suggested(&s);
    assert!(allowed(&ev, &dir("/srv/a")));
    assert!(allowed(&ev, &dir("/srv/b")));
    assert!(allowed(&ev, &file("/srv/b", false)));
    assert!(allowed(&ev, &file("/srv/c", false)));
    // The directory itself, not what is in it.
    assert!(!allowed(&ev, &file("/srv/a/f", false)));
    assert!(!allowed(&ev, &dir("/srv/a/sub")));
    assert!(!allowed(&ev, &dir("/srv/c")));
}

#[test]
fn suggest_rejects_paths_it_cannot_write_exactly() {
    let events = [
        write("/data/a\"b"),
        write("/data/back\\slash"),
        write("/data/../etc/x"),
        write("/data//x"),
        write("relative/x"),
        write("/data/new\nline"),
        write("/data/fine"),
    ];
    let s = run(&events, &custom(), &Options::new(HOME));
    assert_eq!(s.skipped.len(), 6, "{:#?}", s.skipped);
    assert!(s.skipped.iter().all(|k| k.reason.code() == "bad-literal"));
    assert_eq!(
        rule(&s, Action::FileOpenReadWrite).entries,
        [Entry::File("/data/fine".into())]
    );
}

#[test]
fn suggest_ids_do_not_collide_and_nothing_needed_leaves_the_policy_unchanged() {
    let current = Source::new(
        "c.cedar",
        format!(
            "{CUSTOM}\n@id(\"suggested-FileOpenReadWrite-1\")\npermit (principal, action == Action::\"FileOpenReadWrite\", resource == File::\"/srv/old\");\n"
        ),
    );
    let s = run(&[write("/srv/new")], &current, &Options::new(HOME));
    assert_eq!(s.added[0].id, "suggested-FileOpenReadWrite-2");

    // Denied then, allowed by the current policy now.
    let s = run(
        &[write("/srv/old"), write("/tmp/x")],
        &current,
        &Options::new(HOME),
    );
    assert!(s.added.is_empty());
    assert_eq!(s.already_allowed, 2);
    assert_eq!(s.policy, *current.text);
    assert!(s.diff.is_empty(), "{}", s.diff);
}

#[test]
fn suggest_diff_names_both_sides() {
    let mut o = Options::new(HOME);
    o.suggested_label = "out.cedar";
    let s = run(&[write("/data/x")], &custom(), &o);
    assert!(
        s.diff.starts_with("--- custom.cedar\n+++ out.cedar\n"),
        "{}",
        s.diff
    );
    assert!(
        s.diff.contains("+@id(\"suggested-FileOpenReadWrite-1\")"),
        "{}",
        s.diff
    );
    assert!(s.diff.contains("+    File::\"/data/x\""), "{}", s.diff);
    assert!(!s
        .diff
        .lines()
        .any(|l| l.starts_with('-') && !l.starts_with("---")));
}

#[test]
fn suggest_lists_unsupported_denials_and_keeps_principals_apart() {
    let mut bob = write("/data/b");
    bob.principal = "bob".into();
    let mut odd = write("/data/c");
    odd.principal = "we\"ird".into();
    let lost = ev(What::Lost { count: 3 }, Decision::Deny, &[]);
    let s = run(
        &[write("/data/a"), bob, odd, lost],
        &custom(),
        &Options::new(HOME),
    );
    assert_eq!(s.added.len(), 2);
    assert!(s
        .added
        .iter()
        .any(|r| r.principal == "bob" && r.id == "suggested-FileOpenReadWrite-2"));
    let codes: Vec<&str> = s.skipped.iter().map(|k| k.reason.code()).collect();
    assert_eq!(codes, ["unsupported", "bad-literal"]);
    let (_, ev) = load_suggested(&s);
    let mut as_bob = file("/data/a", true);
    if let Request::File { principal, .. } = &mut as_bob {
        *principal = "bob".into();
    }
    assert!(!allowed(&ev, &as_bob), "agent's rule must not allow bob");
}

#[test]
fn suggest_refuses_a_current_policy_that_does_not_load() {
    let bad = Source::new(
        "bad.cedar",
        "permit (principal, action == Action::\"Nope\", resource);",
    );
    let e = suggest(&[write("/x/y")], &bad, &Options::new(HOME)).unwrap_err();
    assert!(matches!(e, SuggestError::Current { .. }), "{e:?}");
}

#[test]
fn suggest_checks_allowed_events_against_another_policy_when_asked() {
    let allow = |what: What| ev(what, Decision::Allow, &["write-workspace-home-tmp"]);
    let events = [
        allow(What::FileOpen {
            path: "/work/proj/src/main.rs".into(),
            access: Access::Write,
        }),
        allow(What::FileOpen {
            path: "/etc/hosts".into(),
            access: Access::Write,
        }),
        allow(What::FileOpen {
            path: "/tmp/scratch".into(),
            access: Access::Write,
        }),
        write("/data/x"),
    ];
    // By default allowed events need nothing.
    let s = run(&events, &custom(), &Options::new(HOME));
    assert_eq!(
        rule(&s, Action::FileOpenReadWrite).entries,
        [Entry::File("/data/x".into())]
    );
    assert!(s.skipped.is_empty());

    // Against a policy the session did not run under, they are checked too.
    let mut o = Options::new(HOME);
    o.include_allowed = true;
    let s = run(&events, &custom(), &o);
    assert_eq!(
        rule(&s, Action::FileOpenReadWrite).entries,
        [
            Entry::File("/data/x".into()),
            Entry::File("/work/proj/src/main.rs".into())
        ]
    );
    assert_eq!(s.covered, 2);
    assert_eq!(s.already_allowed, 0);
    assert_eq!(s.skipped.len(), 1);
    assert_eq!(s.skipped[0].target, "/etc/hosts");
    assert_eq!(s.skipped[0].reason.code(), "forbid");
}

#[test]
fn suggest_a_secret_the_current_policy_allows_needs_nothing() {
    let current = Source::new(
        "open.cedar",
        "@id(\"read-home\")\npermit (principal, action == Action::\"FileOpenReadOnly\", resource in Dir::\"/home/dev/\");\n",
    );
    let s = run(&[read("/home/dev/.ssh/config")], &current, &Options::new(HOME));
    assert!(s.added.is_empty() && s.skipped.is_empty(), "{s:#?}");
    assert_eq!(s.already_allowed, 1);
}

#[test]
fn suggest_verify_refuses_an_invalid_or_uncovering_policy() {
    let e = verify(CUSTOM, &custom(), &[], &[file("/data/x", true)]).unwrap_err();
    assert!(matches!(e, SuggestError::NotCovered { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("still denies `FileOpenReadWrite File::\"/data/x\"` (no permit matches)"),
        "{msg}"
    );
    let e = verify(CUSTOM, &custom(), &[], &[file("/etc/passwd", true)]).unwrap_err();
    assert!(
        e.to_string()
            .contains("denied by `no-etc-writes` at custom.cedar:14"),
        "{e}"
    );
    let bad = format!("{CUSTOM}\npermit (principal, action == Action::\"Nope\", resource);\n");
    let e = verify(&bad, &custom(), &[], &[]).unwrap_err();
    assert!(
        matches!(&e, SuggestError::Invalid { diagnostics } if !diagnostics.is_empty()),
        "{e:?}"
    );
}

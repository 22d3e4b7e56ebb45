//! `POST /api/policy/validate`.

use crate::util::*;

async fn validate(r: &Running, body: &str) -> Resp {
    let auth = format!("Bearer {}", r.token);
    request(
        r.addr,
        "POST",
        "/api/policy/validate",
        &[("Authorization", &auth)],
        Some(body),
    )
    .await
}

const GOOD: &str = "@id(\"read-all\")\npermit (principal, action == Action::\"FileOpenReadOnly\", resource)\nwhen { resource in Dir::\"/\" };\n";

#[tokio::test]
async fn a_good_policy_validates() {
    let (_dir, store) = fixture();
    let r = start(store).await;
    let v = validate(&r, &serde_json::json!({ "text": GOOD }).to_string())
        .await
        .json();
    assert_eq!(v["ok"], true, "{v}");
    r.stop().await;
}

#[tokio::test]
async fn a_typo_is_reported_at_its_line() {
    let (_dir, store) = fixture();
    let r = start(store).await;
    // Line 3 misspells `resource`.
    let text = GOOD.replace("when { resource", "when { resourse");
    let body = serde_json::json!({ "text": text, "name": "mine.cedar" }).to_string();
    let resp = validate(&r, &body).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let v = resp.json();
    assert_eq!(v["ok"], false, "{v}");
    let errors: Vec<_> = v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["severity"] == "error")
        .collect();
    assert!(!errors.is_empty(), "{v}");
    assert_eq!(errors[0]["line"], 3, "{v}");
    assert_eq!(errors[0]["file"], "mine.cedar", "{v}");
    assert!(errors[0]["col"].as_u64().unwrap() >= 1);
    r.stop().await;
}

#[tokio::test]
async fn a_malformed_body_is_a_400_that_says_why() {
    let (_dir, store) = fixture();
    let r = start(store).await;
    for (body, says) in [("{", "EOF"), (r#"{"txt":"x"}"#, "txt"), (r#"{"text":1}"#, "text")] {
        let resp = validate(&r, body).await;
        assert_eq!(resp.status, 400, "{body}: {resp:?}");
        let msg = resp.json()["error"].as_str().unwrap().to_owned();
        assert!(msg.contains(says), "{body}: {msg}");
    }
    r.stop().await;
}

#[tokio::test]
async fn the_current_policy_is_the_newest_accepted_load() {
    use corral_audit::Store;
    use corral_core::What;
    let (_dir, path) = fixture();
    let mut store = Store::open(&path).unwrap();
    let started = store.record_policy("policy.cedar", GOOD).unwrap();
    let reloaded = store.record_policy("ui", "// reloaded\n").unwrap();
    store
        .session_started(&corral_audit::SessionRow {
            id: 3,
            principal: "Agent::\"a3\"".into(),
            policy_label: "policy.cedar".into(),
            policy_sha256: started.clone(),
            mode: "enforce".into(),
            started_ns: now_ns(),
            command: vec!["bash".into()],
        })
        .unwrap();
    let r = start(path).await;
    let v = get(&r, "/api/policy?session=s3").await.json();
    assert_eq!(v["sha256"], started.as_str(), "{v}");
    assert_eq!(v["text"], GOOD);
    assert_eq!(v["session"], 3);
    // An accepted reload, then a refused one: the accepted one counts.
    let load = |sha: &str, error: Option<&str>| {
        event(
            3,
            What::PolicyLoad {
                label: "ui".into(),
                sha256: sha.into(),
                error: error.map(str::to_owned),
            },
            None,
        )
    };
    store
        .insert(&[load(&reloaded, None), load(&"ab".repeat(32), Some("parse error"))])
        .unwrap();
    for q in ["session=3", "session=last", ""] {
        let v = get(&r, &format!("/api/policy?{q}")).await.json();
        assert_eq!(v["sha256"], reloaded.as_str(), "{q}: {v}");
        assert_eq!(v["label"], "ui");
        assert_eq!(v["text"], "// reloaded\n");
    }
    // Session 1's text was never recorded; session 9 does not exist.
    for (q, status, says) in [
        ("session=1", 404, "was not recorded"),
        ("session=9", 404, "no session s9"),
        ("session=x", 400, "`session` \"x\""),
        ("sesion=1", 400, "sesion"),
    ] {
        let resp = get(&r, &format!("/api/policy?{q}")).await;
        assert_eq!(resp.status, status, "{q}: {resp:?}");
        let msg = resp.json()["error"].as_str().unwrap().to_owned();
        assert!(msg.contains(says), "{q}: {msg}");
    }
    r.stop().await;
}

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

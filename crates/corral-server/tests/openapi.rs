//! The OpenAPI document covers exactly the routes the router serves.

use crate::util::*;

#[test]
fn every_route_is_documented_and_every_documented_route_exists() {
    let doc: serde_json::Value = serde_json::from_str(corral_server::openapi()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let routes = corral_server::api_routes();
    for (method, path) in &routes {
        assert!(
            paths.get(*path).and_then(|p| p.get(*method)).is_some(),
            "{method} {path} is served but not in openapi.json"
        );
    }
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            assert!(
                routes.contains(&(method.as_str(), path.as_str())),
                "openapi.json documents {method} {path}, which the router does not serve"
            );
        }
    }
}

#[tokio::test]
async fn the_document_is_served() {
    let (_dir, store) = fixture();
    let r = start(store).await;
    let resp = get(&r, "/api/openapi.json").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.body, corral_server::openapi());
    // Something not in the table is not served, and without the token
    // an unknown /api path looks like any other (401, not 404).
    assert_eq!(get(&r, "/api/nope").await.status, 404);
    assert_eq!(request(r.addr, "GET", "/api/nope", &[], None).await.status, 401);
    assert_eq!(request(r.addr, "GET", "/nope", &[], None).await.status, 404);
    r.stop().await;
}

//! Where the server listens.

use crate::util::*;
use corral_server::{Server, ServerError, DEFAULT_LISTEN, PORT_TRIES};

#[tokio::test]
async fn non_loopback_is_refused_unless_allowed() {
    let (_dir, store) = fixture();
    assert!(DEFAULT_LISTEN.ip().is_loopback());
    assert_eq!(
        corral_server::ServerConfig::new(store.clone(), "/tmp".into()).listen,
        DEFAULT_LISTEN
    );
    for listen in ["0.0.0.0:0", "[::]:0", "192.0.2.1:0"] {
        let mut c = config(store.clone());
        c.listen = listen.parse().unwrap();
        match Server::bind(c).await {
            Err(e @ ServerError::NonLoopback(_)) => {
                let msg = e.to_string();
                assert!(msg.contains(listen) && msg.contains("loopback"), "{msg}");
            }
            Err(e) => panic!("{listen}: wrong error {e}"),
            Ok(s) => panic!("{listen}: bound {}", s.local_addr()),
        }
    }
}

#[tokio::test]
async fn a_taken_port_moves_to_the_next_free_one() {
    let (_dir, store) = fixture();
    // Hold a port, then ask for it.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let mut c = config(store);
    c.listen = held.local_addr().unwrap();
    let s = match Server::bind(c).await {
        Ok(s) => s,
        // Every port up to +20 taken by others: not what this test is about.
        Err(ServerError::NoFreePort { .. }) => return,
        Err(e) => panic!("{e}"),
    };
    let got = s.local_addr().port();
    assert!(got > port && got <= port + PORT_TRIES, "{port} -> {got}");
    assert!(s.url().contains(&format!(":{got}/?token=")));
    drop(held);
}

#[tokio::test]
async fn all_ports_taken_is_a_clear_error() {
    let (_dir, store) = fixture();
    // Hold a run of PORT_TRIES + 1 ports; give up (pass) if another
    // process holds one of them.
    let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = first.local_addr().unwrap().port();
    let Some(last) = port.checked_add(PORT_TRIES) else {
        return;
    };
    let mut held = vec![first];
    for p in port + 1..=last {
        match std::net::TcpListener::bind(("127.0.0.1", p)) {
            Ok(l) => held.push(l),
            Err(_) => return,
        }
    }
    let mut c = config(store);
    c.listen = held[0].local_addr().unwrap();
    match Server::bind(c).await {
        Err(e @ ServerError::NoFreePort { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&format!("from {port} to {last}")), "{msg}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(s) => panic!("bound {} with every port held", s.local_addr()),
    }
}

#[tokio::test]
async fn a_configured_token_is_used_and_checked() {
    let (_dir, store) = fixture();
    let mut c = config(store.clone());
    c.token = Some("short".into());
    assert!(matches!(Server::bind(c).await, Err(ServerError::BadToken(5))));
    let mut c = config(store);
    c.token = Some("given-token-0123456789".into());
    let s = Server::bind(c).await.unwrap();
    assert_eq!(s.token(), "given-token-0123456789");
}

//! How an MCP event reads: its `target` (as stored and grepped) and what
//! came of it, shared by the store, the exporters' summaries and
//! `corral events`.

use corral_core::What;

/// The store's `target` of an MCP event: `server: method tool`, e.g.
/// `everything: tools/call printEnv` (`server: refused` for traffic that
/// could not be read); `None` for other events.
pub fn target(what: &What) -> Option<String> {
    let What::Mcp {
        server, method, tool, ..
    } = what
    else {
        return None;
    };
    let m = if method.is_empty() { "refused" } else { method };
    Some(match tool {
        Some(t) => format!("{server}: {m} {t}"),
        None => format!("{server}: {m}"),
    })
}

/// What an MCP event says beyond its target, e.g. `request via stdio,
/// args {"path":"/etc/passwd"}` or `response via http, 2.1 ms, hid
/// [printEnv]`. `None` for other events.
pub fn outcome(what: &What) -> Option<String> {
    let What::Mcp {
        transport,
        direction,
        stage,
        args,
        args_truncated,
        hidden,
        duration_us,
        ..
    } = what
    else {
        return None;
    };
    let arrow = if direction == "to_client" {
        "server→agent"
    } else {
        "agent→server"
    };
    let mut parts = vec![format!("{stage} {arrow} via {transport}")];
    if let Some(a) = args.as_deref().filter(|a| *a != "{}") {
        parts.push(format!("args {a}{}", if *args_truncated { "…" } else { "" }));
    }
    if let Some(d) = duration_us {
        parts.push(super::http::duration(*d));
    }
    if !hidden.is_empty() {
        parts.push(format!("hid [{}]", hidden.join(", ")));
    }
    Some(parts.join(", "))
}

/// The error of an MCP event.
pub fn error(what: &What) -> Option<&str> {
    match what {
        What::Mcp { error, .. } => error.as_deref(),
        _ => None,
    }
}

/// An MCP event whose `proc` is empty (the process behind it is unknown).
pub fn pid_unknown(e: &corral_core::Event) -> bool {
    matches!(e.what, What::Mcp { .. }) && e.proc.pid == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ev(tool: Option<&str>, method: &str) -> What {
        What::Mcp {
            transport: "stdio".into(),
            server: "everything".into(),
            direction: "to_server".into(),
            stage: "request".into(),
            method: method.into(),
            rpc_id: Some("3".into()),
            tool: tool.map(str::to_string),
            args: Some(r#"{"message":"hi"}"#.into()),
            args_truncated: false,
            hidden: vec![],
            error: None,
            duration_us: None,
            conversation: "m1".into(),
            session_id: None,
            bytes: 80,
        }
    }

    #[test]
    fn targets_name_server_method_and_tool() {
        assert_eq!(
            target(&ev(Some("echo"), "tools/call")).unwrap(),
            "everything: tools/call echo"
        );
        assert_eq!(target(&ev(None, "")).unwrap(), "everything: refused");
        let o = outcome(&ev(Some("echo"), "tools/call")).unwrap();
        assert_eq!(o, r#"request agent→server via stdio, args {"message":"hi"}"#);
        assert!(target(&What::Fork { child: 1 }).is_none());
    }
}

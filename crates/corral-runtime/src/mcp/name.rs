//! The id a wrapped stdio server gets when `corral mcp wrap` is not given
//! `--name`: the package or script its command line runs.

/// A program that runs another: how to find what it runs.
struct Launcher {
    /// Program names (the basename of the command word).
    names: &'static [&'static str],
    /// Subcommand words skipped after it (`run`, `dlx`, `x`, ...).
    subcommands: &'static [&'static str],
    /// Without one of its subcommands it runs nothing we can name.
    needs_subcommand: bool,
    /// Flags followed by a separate value (`--flag=value` is one word
    /// whatever the flag).
    valued: &'static [&'static str],
    /// Flags whose value is what runs (`python -m MODULE`, `java -jar JAR`).
    target: &'static [&'static str],
    /// Flags that run code from the command line: nothing to name.
    inline: &'static [&'static str],
}

const UV_VALUED: &[&str] = &[
    "--from",
    "--with",
    "-w",
    "--with-editable",
    "--with-requirements",
    "--python",
    "-p",
    "--index",
    "--index-url",
    "-i",
    "--extra-index-url",
    "--default-index",
    "--find-links",
    "-f",
    "--directory",
    "--project",
    "--package",
    "--env-file",
    "--group",
    "--extra",
    "--cache-dir",
    "--config-file",
    "--python-preference",
];

const CONTAINER_VALUED: &[&str] = &[
    "-e",
    "--env",
    "--env-file",
    "-v",
    "--volume",
    "--mount",
    "--name",
    "-p",
    "--publish",
    "-w",
    "--workdir",
    "--network",
    "--net",
    "-u",
    "--user",
    "--entrypoint",
    "--platform",
    "-l",
    "--label",
    "--cpus",
    "-m",
    "--memory",
    "--add-host",
    "--cap-add",
    "--cap-drop",
    "--device",
    "-h",
    "--hostname",
    "--pull",
    "--restart",
    "--runtime",
    "--security-opt",
    "--tmpfs",
    "--ulimit",
    "--userns",
    "--ipc",
    "--pid",
    "--log-driver",
    "--log-opt",
    "--dns",
    "--cidfile",
    "--stop-signal",
    "--stop-timeout",
    "--shm-size",
    "--gpus",
    "--group-add",
];

const LAUNCHERS: &[Launcher] = &[
    Launcher {
        names: &["npx", "pnpx", "bunx"],
        subcommands: &[],
        needs_subcommand: false,
        valued: &[
            "-p",
            "--package",
            "--cache",
            "--registry",
            "--userconfig",
            "--prefix",
        ],
        target: &[],
        inline: &["-c", "--call"],
    },
    Launcher {
        names: &["npm"],
        subcommands: &["exec", "x"],
        needs_subcommand: true,
        valued: &[
            "-p",
            "--package",
            "--prefix",
            "-w",
            "--workspace",
            "--registry",
            "--cache",
        ],
        target: &[],
        inline: &["-c", "--call"],
    },
    Launcher {
        names: &["pnpm", "yarn"],
        subcommands: &["dlx", "exec"],
        needs_subcommand: true,
        valued: &["-p", "--package", "-C", "--dir", "--filter", "-F", "--cwd"],
        target: &[],
        inline: &["-c", "--shell-mode"],
    },
    Launcher {
        names: &["bun"],
        subcommands: &["run", "x"],
        needs_subcommand: false,
        valued: &["--cwd", "-r", "--preload", "--env-file", "--config", "-c"],
        target: &[],
        inline: &["-e", "--eval", "-p", "--print"],
    },
    Launcher {
        names: &["node", "nodejs", "tsx", "ts-node"],
        subcommands: &[],
        needs_subcommand: false,
        valued: &[
            "-r",
            "--require",
            "--import",
            "--loader",
            "--experimental-loader",
            "--env-file",
            "-C",
            "--conditions",
            "--title",
        ],
        target: &[],
        inline: &["-e", "--eval", "-p", "--print"],
    },
    Launcher {
        names: &["deno"],
        subcommands: &["run"],
        needs_subcommand: true,
        valued: &["--config", "-c", "--import-map", "--lock", "--cert", "--location"],
        target: &[],
        inline: &[],
    },
    Launcher {
        names: &["python"],
        subcommands: &[],
        needs_subcommand: false,
        valued: &["-W", "-X"],
        target: &["-m"],
        inline: &["-c"],
    },
    Launcher {
        names: &["uvx"],
        subcommands: &[],
        needs_subcommand: false,
        valued: UV_VALUED,
        target: &[],
        inline: &[],
    },
    Launcher {
        names: &["uv"],
        subcommands: &["run", "tool"],
        needs_subcommand: true,
        valued: UV_VALUED,
        target: &["-m", "--module"],
        inline: &[],
    },
    Launcher {
        names: &["pipx"],
        subcommands: &["run"],
        needs_subcommand: true,
        valued: &["--spec", "--python", "--pip-args", "--index-url", "-i"],
        target: &[],
        inline: &[],
    },
    Launcher {
        names: &["poetry", "pdm"],
        subcommands: &["run"],
        needs_subcommand: true,
        valued: &["-C", "--directory", "-P", "--project", "-p"],
        target: &[],
        inline: &[],
    },
    Launcher {
        names: &["docker", "podman", "nerdctl"],
        subcommands: &["run", "container"],
        needs_subcommand: true,
        valued: CONTAINER_VALUED,
        target: &[],
        inline: &[],
    },
    Launcher {
        names: &["java"],
        subcommands: &[],
        needs_subcommand: false,
        valued: &["-cp", "-classpath", "--class-path", "-p", "--module-path"],
        target: &["-jar"],
        inline: &[],
    },
    Launcher {
        names: &["env"],
        subcommands: &[],
        needs_subcommand: false,
        valued: &["-u", "--unset", "-C", "--chdir"],
        target: &[],
        inline: &["-S", "--split-string"],
    },
];

/// Extensions taken off a script's name.
const SCRIPT_EXTENSIONS: &[&str] = &[
    "py", "pyz", "js", "mjs", "cjs", "ts", "mts", "cts", "jsx", "tsx", "rb", "jar", "sh", "exe",
];

/// The server id for a wrapped command line, when `--name` is not given.
///
/// The rule: launchers are looked through, and the id is the name of the
/// package, module or script they run, or of the command itself.
///
/// * Launchers: `npx`, `pnpx`, `bunx`, `npm exec`/`npm x`, `pnpm dlx`/`exec`,
///   `yarn dlx`/`exec`, `bun [run|x]`, `node`, `nodejs`, `tsx`, `ts-node`,
///   `deno run`, `python`/`python3`/`python3.N` (and `-m MODULE`), `uvx`,
///   `uv run`, `uv tool run`, `pipx run`, `poetry run`, `pdm run`,
///   `docker`/`podman`/`nerdctl run`, `java` (and `-jar JAR`), `env` (with
///   its `NAME=value` words). Their flags are skipped, with the value of
///   those known to take one; `--` ends the flags. What they run may be a
///   launcher again (`uv run python server.py`).
/// * The word found is reduced to a name: `npm:`, `jsr:` and `pypi:`
///   prefixes go; a scoped package `@scope/name` keeps `name`; a path, URL
///   or image keeps its last segment; a version (`@1.2`, `==1.2`, `>=1`),
///   an extra (`[cli]`), an image tag or digest (`:latest`, `@sha256:…`)
///   and a script extension (`.py`, `.js`, `.ts`, `.jar`, ...) go.
///
/// So `npx -y @scope/server-everything@1.2` is `server-everything`,
/// `python3 /x/y/server.py` is `server`, `uvx mcp-server-git` is
/// `mcp-server-git`, `docker run -i --rm ghcr.io/org/github-mcp-server` is
/// `github-mcp-server`.
///
/// `None` when nothing can be named: code on the command line
/// (`python -c`, `node -e`), a launcher without what it runs, or a
/// subcommand of a launcher that runs no package (`docker ps`). Shells
/// (`sh -c ...`) are not looked through: the id is `sh`. In those cases
/// the server needs `--name`.
pub fn server_name(argv: &[String]) -> Option<String> {
    let mut at = 0;
    loop {
        let word = argv.get(at)?;
        let base = word.rsplit('/').next().unwrap_or(word);
        let Some(launcher) = launcher(base) else {
            return reduce(word);
        };
        match target(launcher, argv, at + 1)? {
            Target::Next(next) => at = next,
            Target::Final(word) => return reduce(word),
        }
    }
}

enum Target<'a> {
    /// The program at this index runs next (it may be a launcher).
    Next(usize),
    /// This word names what runs (a module, a jar).
    Final(&'a str),
}

fn launcher(base: &str) -> Option<&'static Launcher> {
    let python = base
        .strip_prefix("python")
        .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'));
    let base = if python { "python" } else { base };
    LAUNCHERS.iter().find(|l| l.names.contains(&base))
}

/// Where what `launcher` runs starts, looking from `from`.
fn target<'a>(launcher: &Launcher, argv: &'a [String], from: usize) -> Option<Target<'a>> {
    let mut at = from;
    let mut sub = false;
    let env = launcher.names.contains(&"env");
    loop {
        let word = argv.get(at)?;
        if word == "--" {
            return (sub || !launcher.needs_subcommand).then_some(Target::Next(at + 1));
        }
        if word.len() > 1 && word.starts_with('-') {
            let (flag, value) = match word.split_once('=') {
                Some((f, v)) => (f, Some(v)),
                None => (word.as_str(), None),
            };
            if launcher.inline.contains(&flag) {
                return None;
            }
            if launcher.target.contains(&flag) {
                return match value {
                    Some(v) => Some(Target::Final(v)),
                    None => argv.get(at + 1).map(|v| Target::Final(v)),
                };
            }
            at += if value.is_none() && launcher.valued.contains(&flag) {
                2
            } else {
                1
            };
            continue;
        }
        if launcher.subcommands.contains(&word.as_str()) {
            sub = true;
            at += 1;
            continue;
        }
        if env && word.contains('=') {
            at += 1;
            continue;
        }
        if launcher.needs_subcommand && !sub {
            return None;
        }
        return Some(Target::Next(at));
    }
}

/// A package, module, image or script word reduced to a name.
fn reduce(word: &str) -> Option<String> {
    let mut w = word;
    for prefix in ["npm:", "jsr:", "pypi:", "git+"] {
        w = w.strip_prefix(prefix).unwrap_or(w);
    }
    // A URL: drop the fragment and query first.
    if w.contains("://") {
        w = w.split(['#', '?']).next().unwrap_or(w);
    }
    // `@scope/name@1.2`: the version's `@` is the one after the scope.
    let scoped = w.starts_with('@');
    if scoped {
        w = w.get(1..).unwrap_or_default();
    }
    // The last non-empty segment of a path, URL, scope or image.
    w = w.trim_end_matches('/').rsplit('/').next().unwrap_or(w);
    // Versions, extras, tags, digests.
    if let Some(cut) = w.find(['@', '=', '<', '>', '!', '~', '[', ';', ':', ' ']) {
        w = w.get(..cut).unwrap_or(w);
    }
    w = w.strip_suffix(".git").unwrap_or(w);
    if let Some((stem, ext)) = w.rsplit_once('.') {
        if !stem.is_empty() && SCRIPT_EXTENSIONS.contains(&ext) {
            w = stem;
        }
    }
    (!w.is_empty()).then(|| w.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(cmd: &str) -> Option<String> {
        let argv: Vec<String> = cmd.split_whitespace().map(str::to_string).collect();
        server_name(&argv)
    }

    #[test]
    fn launchers_are_looked_through() {
        for (cmd, want) in [
            (
                "npx -y @modelcontextprotocol/server-everything",
                "server-everything",
            ),
            ("npx -y @scope/server-everything@1.2", "server-everything"),
            (
                "npx --yes -- mcp-remote@latest https://x.example/sse",
                "mcp-remote",
            ),
            ("npx -p @scope/pkg pkg-cli --flag", "pkg-cli"),
            ("/usr/bin/npx --registry https://r.example srv@2", "srv"),
            ("bunx @playwright/mcp@latest", "mcp"),
            ("npm exec -y -- @scope/tool@1", "tool"),
            ("pnpm dlx @scope/srv", "srv"),
            ("yarn dlx srv-a", "srv-a"),
            ("bun run server.ts", "server"),
            ("bun server.ts", "server"),
            ("node /app/dist/main.mjs --port 3", "main"),
            ("node --require ./hook.js ./srv.cjs", "srv"),
            ("deno run -A --config deno.json jsr:@scope/pkg", "pkg"),
            ("deno run --allow-net=x npm:server-x@1.0.0", "server-x"),
            ("python3 /x/y/server.py", "server"),
            ("/usr/bin/python3.12 -u -W ignore srv.py", "srv"),
            (
                "python -m mcp_server_time --local-timezone=UTC",
                "mcp_server_time",
            ),
            ("uvx mcp-server-git --repository /r", "mcp-server-git"),
            ("uvx --from git+https://github.com/org/repo.git mcp-x", "mcp-x"),
            ("uvx mcp-server-fetch==1.0", "mcp-server-fetch"),
            ("uvx mcp-server-fetch[cli]>=2", "mcp-server-fetch"),
            ("uv --directory /srv/weather run weather.py", "weather"),
            ("uv run --with mcp python server.py", "server"),
            ("uv tool run srv-b", "srv-b"),
            ("pipx run --spec x==1 x-srv", "x-srv"),
            ("poetry run python -m pkg.server", "pkg.server"),
            (
                "docker run -i --rm -e TOKEN ghcr.io/github/github-mcp-server",
                "github-mcp-server",
            ),
            ("podman container run -i -v /a:/b --rm img/x:1.2", "x"),
            ("docker run --rm -i mcp/fetch@sha256:abc", "fetch"),
            ("java -jar /opt/srv.jar", "srv"),
            ("env FOO=1 -u BAR npx srv-c", "srv-c"),
            ("mcp-server-git", "mcp-server-git"),
            ("/usr/local/bin/mcp-server-git --repo x", "mcp-server-git"),
            ("./target/release/my-server", "my-server"),
            ("sh -c anything", "sh"),
            ("https://example.com/a/b/srv.git#main", "srv"),
        ] {
            assert_eq!(name(cmd).as_deref(), Some(want), "{cmd}");
        }
    }

    #[test]
    fn nothing_to_name() {
        for cmd in [
            "",
            "npx",
            "npx -y",
            "python -c print(1)",
            "node -e 1",
            "docker ps",
            "uv sync",
            "pnpm install x",
            "env -S x",
            "npx -y @",
            "python -m",
        ] {
            assert_eq!(name(cmd), None, "{cmd}");
        }
    }
}

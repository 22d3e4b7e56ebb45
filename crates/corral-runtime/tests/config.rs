//! Configuration: layering with origins, file:line:col errors, path
//! resolution, volume and env merging, recipes, and remembered consent.

// Test code: a panic is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use corral_runtime::config::{
    find_project, load, remember_consent, ConfigError, Engine, Flags, Origin, Settings, Val, Volume,
};
use corral_runtime::recipes::{self, Recipe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A temporary directory, removed on drop.
struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("corral-config-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Tmp(dir)
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn global(path: &Path, line: usize) -> Origin {
    Origin::Global {
        path: path.to_path_buf(),
        line,
    }
}

fn project(path: &Path, line: usize) -> Origin {
    Origin::Project {
        path: path.to_path_buf(),
        line,
    }
}

fn flag(name: &str) -> Origin {
    Origin::Flag(name.into())
}

fn load_files(g: Option<&Path>, p: Option<&Path>) -> Result<Settings, ConfigError> {
    load(g, p, &Flags::default())
}

/// Loads `text` as a project file and returns the error's display.
fn error_of(text: &str) -> (PathBuf, String) {
    let t = Tmp::new("err");
    let p = t.write("corral.toml", text);
    match load_files(None, Some(&p)) {
        Ok(s) => panic!("expected an error for {text:?}, got {s:?}"),
        Err(e) => (p, e.to_string()),
    }
}

#[test]
fn flags_override_project_which_overrides_global_which_overrides_defaults() {
    let t = Tmp::new("layers");
    let g = t.write(
        "home/corral/config.toml",
        "# global\nimage = \"global/img\"\nruntime = \"docker\"\nshadow = true\n\n[ui]\nlisten = \"127.0.0.1:9000\"\n",
    );
    let p = t.write(
        "proj/corral.toml",
        "image = \"project/img\"\nruntime = \"docker\"\n",
    );
    let flags = Flags {
        runtime: Some("podman".into()),
        ..Flags::default()
    };
    let s = load(Some(&g), Some(&p), &flags).unwrap();
    assert_eq!(s.image, Some(Val::new("project/img".into(), project(&p, 1))));
    assert_eq!(s.runtime, Some(Val::new(Engine::Podman, flag("--runtime"))));
    assert_eq!(s.shadow, Val::new(true, global(&g, 4)));
    assert_eq!(
        s.ui_listen,
        Val::new("127.0.0.1:9000".parse().unwrap(), global(&g, 7))
    );
    assert_eq!(s.policy, None);
    assert_eq!(s.global_file.as_deref(), Some(g.as_path()));
    assert_eq!(s.project_file.as_deref(), Some(p.as_path()));

    // Without files: built-in defaults.
    let d = load_files(None, None).unwrap();
    assert_eq!(
        d.ui_listen,
        Val::new("127.0.0.1:18080".parse().unwrap(), Origin::Default)
    );
    assert_eq!(d.shadow, Val::new(false, Origin::Default));
    assert_eq!((d.image, d.runtime, d.global_file), (None, None, None));
}

#[test]
fn origins_display_as_documented() {
    assert_eq!(Origin::Default.to_string(), "default");
    assert_eq!(
        global(Path::new("/x/config.toml"), 3).to_string(),
        "/x/config.toml:3"
    );
    assert_eq!(
        project(Path::new("/p/corral.toml"), 2).to_string(),
        "/p/corral.toml:2"
    );
    assert_eq!(flag("--image").to_string(), "flag --image");
    assert_eq!(Engine::Docker.to_string(), "docker");
}

#[test]
fn missing_files_are_absent_and_unreadable_ones_are_errors() {
    let t = Tmp::new("missing");
    let s = load_files(Some(&t.0.join("nope.toml")), Some(&t.0.join("corral.toml"))).unwrap();
    assert_eq!((s.global_file, s.project_file), (None, None));

    // A directory where the file should be cannot be read.
    std::fs::create_dir_all(t.0.join("dir.toml")).unwrap();
    let e = load_files(Some(&t.0.join("dir.toml")), None).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
    assert!(e.to_string().starts_with("cannot read `"), "{e}");
}

#[test]
fn unknown_keys_name_file_line_and_column() {
    let (p, e) = error_of("image = \"x\"\n\nimgae = \"y\"\n");
    assert!(
        e.starts_with(&format!("{}:3:1: unknown field `imgae`", p.display())),
        "{e}"
    );

    let (p, e) = error_of("[ui]\nlisten = \"127.0.0.1:1\"\n  port = 3\n");
    assert!(
        e.starts_with(&format!("{}:3:3: unknown field `port`", p.display())),
        "{e}"
    );

    let (p, e) = error_of("[recipes.claude]\ncommand = [\"claude\"]\nmount = true\n");
    assert!(
        e.starts_with(&format!("{}:3:1: unknown field `mount`", p.display())),
        "{e}"
    );

    let (p, e) = error_of("shadow = false\n[network]\nx = 1\n");
    assert!(
        e.starts_with(&format!("{}:2:2: unknown field `network`", p.display())),
        "{e}"
    );
}

#[test]
fn bad_values_say_what_the_value_and_where() {
    // (file text, line, col, expected message fragment)
    let cases: &[(&str, usize, usize, &str)] = &[
        ("volumes = [\"/data\"]", 1, 12, "volume `/data` is malformed"),
        (
            "volumes = [\"/a:/a\",\n  \"/data:data\"]",
            2,
            3,
            "destination `data` must be an absolute path",
        ),
        ("volumes = [\"/a:/b:rx\"]", 1, 12, "mode `rx`"),
        ("runtime = \"lxc\"", 1, 11, "runtime `lxc` is not supported"),
        ("[ui]\nlisten = \"localhost\"", 2, 10, "ui.listen `localhost`"),
        ("[env]\n1BAD = \"x\"", 2, 1, "name `1BAD` is invalid"),
        ("[env]\n\"A-B\" = \"x\"", 2, 1, "name `A-B` is invalid"),
        (
            "[recipes.claude]\ncommand = []",
            2,
            11,
            "recipes.claude.command is empty",
        ),
        (
            "[recipes.claude]\nconfig_paths = [\".claude\", \"/etc\"]",
            2,
            28,
            "config path `/etc` must be relative",
        ),
        (
            "[recipes.claude]\nconfig_paths = [\"a/../../x\"]",
            2,
            17,
            "config path `a/../../x` must not contain `..`",
        ),
        (
            "[recipes.claude]\nenv = [\"OK\", \"NOT OK\"]",
            2,
            14,
            "recipes.claude.env: environment variable name `NOT OK` is invalid",
        ),
        (
            "[recipes.mine]\nhosts = [\"a:1\"]",
            1,
            10,
            "`mine` is not a built-in agent",
        ),
        (
            "shadow = \"yes\"",
            1,
            10,
            "invalid type: string \"yes\", expected a boolean",
        ),
        ("image = \"\"", 1, 9, "image `` is empty"),
        ("image = [", 1, 10, "invalid array: expected `]`"),
    ];
    for (text, line, col, want) in cases {
        let (p, e) = error_of(text);
        let at = format!("{}:{line}:{col}: ", p.display());
        assert!(e.starts_with(&at), "{text:?}: want {at}, got {e}");
        assert!(e.contains(want), "{text:?}: want {want:?} in {e}");
    }
}

#[test]
fn bad_flags_name_the_flag() {
    let cases: &[(Flags, &str)] = &[
        (
            Flags {
                runtime: Some("rkt".into()),
                ..Flags::default()
            },
            "flag `--runtime`: runtime `rkt` is not supported",
        ),
        (
            Flags {
                env: vec!["NOVALUE".into()],
                ..Flags::default()
            },
            "flag `--env`: `NOVALUE` is not `NAME=value`",
        ),
        (
            Flags {
                volumes: vec!["/a:rel".into()],
                ..Flags::default()
            },
            "flag `--volume`: volume `/a:rel`: destination `rel` must be an absolute path",
        ),
        (
            Flags {
                ui_listen: Some("nope".into()),
                ..Flags::default()
            },
            "flag `--ui-listen`: ui.listen `nope`",
        ),
    ];
    for (flags, want) in cases {
        let e = load(None, None, flags).unwrap_err().to_string();
        assert!(e.starts_with(want), "want {want}, got {e}");
    }
}

#[test]
fn relative_paths_resolve_against_the_files_directory() {
    let t = Tmp::new("rel");
    let g = t.write(
        "cfg/corral/config.toml",
        "policy = \"../policies/main.cedar\"\nvolumes = [\"./cache:/cache\", \"/abs:/abs:ro\"]\n",
    );
    let p = t.write("proj/corral.toml", "policy = \"corral.cedar\"\n");
    let gs = load_files(Some(&g), None).unwrap();
    assert_eq!(
        gs.policy.unwrap().value,
        t.0.join("cfg/corral/../policies/main.cedar")
    );
    assert_eq!(
        gs.volumes.iter().map(|v| v.value.clone()).collect::<Vec<_>>(),
        vec![
            Volume {
                src: t.0.join("cfg/corral/cache"),
                dst: "/cache".into(),
                read_only: false
            },
            Volume {
                src: "/abs".into(),
                dst: "/abs".into(),
                read_only: true
            },
        ]
    );
    let ps = load_files(Some(&g), Some(&p)).unwrap();
    assert_eq!(
        ps.policy,
        Some(Val::new(t.0.join("proj/corral.cedar"), project(&p, 1)))
    );

    // Flags resolve against the current directory.
    let flags = Flags {
        policy: Some("x.cedar".into()),
        volumes: vec!["src:/dst".into()],
        ..Flags::default()
    };
    let fs = load(None, None, &flags).unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(fs.policy.unwrap().value, cwd.join("x.cedar"));
    assert_eq!(fs.volumes[0].value.src, cwd.join("src"));
}

#[test]
fn volumes_accumulate_and_a_later_destination_replaces_an_earlier_one() {
    let t = Tmp::new("vols");
    let g = t.write("g.toml", "volumes = [\n  \"/g1:/data\",\n  \"/g2:/other\",\n]\n");
    let p = t.write("p/corral.toml", "volumes = [\"/p1:/data/:ro\", \"/p2:/p\"]\n");
    let flags = Flags {
        volumes: vec!["/f1:/other:rw".into(), "/f2:/f".into()],
        ..Flags::default()
    };
    let s = load(Some(&g), Some(&p), &flags).unwrap();
    let got: Vec<(String, Origin)> = s
        .volumes
        .iter()
        .map(|v| (v.value.to_string(), v.origin.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("/p1:/data:ro".to_string(), project(&p, 1)),
            ("/f1:/other:rw".to_string(), flag("--volume")),
            ("/p2:/p:rw".to_string(), project(&p, 1)),
            ("/f2:/f:rw".to_string(), flag("--volume")),
        ]
    );
}

#[test]
fn env_tables_merge_per_key() {
    let t = Tmp::new("env");
    let g = t.write(
        "g.toml",
        "[env]\nA = \"global\"\nB = \"global\"\nC = \"global\"\n",
    );
    let p = t.write("p/corral.toml", "[env]\nB = \"project\"\nD = \"project\"\n");
    let flags = Flags {
        env: vec!["C=flag=with=equals".into(), "E=".into()],
        ..Flags::default()
    };
    let s = load(Some(&g), Some(&p), &flags).unwrap();
    let got: Vec<(&str, &str, &Origin)> = s
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.value.as_str(), &v.origin))
        .collect();
    assert_eq!(
        got,
        vec![
            ("A", "global", &global(&g, 2)),
            ("B", "project", &project(&p, 2)),
            ("C", "flag=with=equals", &flag("--env")),
            ("D", "project", &project(&p, 3)),
            ("E", "", &flag("--env")),
        ]
    );
}

#[test]
fn recipe_overrides_merge_per_field_and_config_only_agents_are_recipes() {
    let t = Tmp::new("recipes");
    let g = t.write(
        "g.toml",
        "[recipes.claude]\nmount_config = true\nhosts = [\"api.anthropic.com:443\"]\n\n[recipes.mine]\ncommand = [\"mine\", \"--fast\"]\n\n[recipes.codex]\nmount_config = false\nhosts = [\"g:1\"]\n",
    );
    let p = t.write(
        "p/corral.toml",
        "[recipes.claude]\ncommand = [\"claude\", \"--verbose\"]\n\n[recipes.mine]\nenv = [\"MINE_KEY\"]\n\n[recipes.codex]\nhosts = [\"p:2\"]\nmount_config = true\n",
    );
    let s = load_files(Some(&g), Some(&p)).unwrap();
    let claude = &s.recipes["claude"];
    assert_eq!(claude.mount_config, Some(Val::new(true, global(&g, 2))));
    assert_eq!(claude.command.as_ref().map(|v| &v.origin), Some(&project(&p, 2)));

    let mut want = recipes::builtin("claude").unwrap();
    want.command = vec!["claude".into(), "--verbose".into()];
    want.hosts = vec!["api.anthropic.com:443".into()];
    want.mount_config = Some(true);
    assert_eq!(recipes::resolve("claude", &s), Some(want));

    assert_eq!(
        recipes::resolve("mine", &s),
        Some(Recipe {
            name: "mine".into(),
            command: vec!["mine".into(), "--fast".into()],
            config_paths: vec![],
            env: vec!["MINE_KEY".into()],
            hosts: vec![],
            mount_config: None,
        })
    );
    // A field set in both files: the project's wins.
    let codex = &s.recipes["codex"];
    assert_eq!(codex.mount_config, Some(Val::new(true, project(&p, 9))));
    assert_eq!(
        codex.hosts,
        Some(Val::new(vec!["p:2".to_string()], project(&p, 8)))
    );
    let codex = recipes::resolve("codex", &s).unwrap();
    assert_eq!(
        (codex.hosts, codex.mount_config),
        (vec!["p:2".to_string()], Some(true))
    );
    assert_eq!(codex.env, recipes::builtin("codex").unwrap().env);

    // Untouched built-ins resolve to themselves; unknown names are not agents.
    assert_eq!(recipes::resolve("gemini", &s), recipes::builtin("gemini"));
    assert_eq!(recipes::resolve("bash", &s), None);
    assert_eq!(
        recipes::builtin_names(),
        &["claude", "codex", "gemini", "qwen", "opencode"]
    );
}

#[test]
fn builtin_recipes_carry_the_documented_facts() {
    let claude = recipes::builtin("claude").unwrap();
    assert_eq!(claude.config_paths, vec![".claude", ".claude.json"]);
    assert!(claude.env.contains(&"ANTHROPIC_API_KEY".to_string()));
    assert!(claude.hosts.contains(&"api.anthropic.com:443".to_string()));
    let opencode = recipes::builtin("opencode").unwrap();
    assert_eq!(opencode.config_paths[0], ".config/opencode");
    assert_eq!(recipes::builtin("gemini").unwrap().command, vec!["gemini"]);
    assert_eq!(recipes::builtin("qwen").unwrap().mount_config, None);
}

#[test]
fn remember_consent_keeps_comments_and_other_keys_and_reloads() {
    let t = Tmp::new("consent");
    let g = t.write(
        "corral/config.toml",
        "# my settings\nimage = \"img\"   # pinned\n\n[recipes.claude]\n# asked once\nmount_config = false  # first answer\nhosts = [\"a:1\"]\n\n[env]\nX = \"1\"\n",
    );
    remember_consent(&g, "claude", true).unwrap();
    remember_consent(&g, "codex", false).unwrap();
    let text = std::fs::read_to_string(&g).unwrap();
    assert_eq!(
        text,
        "# my settings\nimage = \"img\"   # pinned\n\n[recipes.claude]\n# asked once\nmount_config = true  # first answer\nhosts = [\"a:1\"]\n\n[recipes.codex]\nmount_config = false\n\n[env]\nX = \"1\"\n"
    );
    let s = load_files(Some(&g), None).unwrap();
    assert_eq!(
        s.recipes["claude"].mount_config,
        Some(Val::new(true, global(&g, 6)))
    );
    assert_eq!(
        s.recipes["codex"].mount_config,
        Some(Val::new(false, global(&g, 10)))
    );
    assert_eq!(s.env["X"].value, "1");
    assert_eq!(recipes::resolve("codex", &s).unwrap().mount_config, Some(false));
}

#[test]
fn remember_consent_creates_a_private_directory_and_file() {
    use std::os::unix::fs::PermissionsExt as _;
    let t = Tmp::new("fresh");
    let g = t.0.join("xdg/corral/config.toml");
    remember_consent(&g, "gemini", true).unwrap();
    assert_eq!(
        std::fs::read_to_string(&g).unwrap(),
        "[recipes.gemini]\nmount_config = true\n"
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&t.0.join("xdg/corral")), 0o700);
    assert_eq!(mode(&g), 0o600);
    let s = load_files(Some(&g), None).unwrap();
    assert_eq!(recipes::resolve("gemini", &s).unwrap().mount_config, Some(true));
}

#[test]
fn remember_consent_edits_inline_and_dotted_tables() {
    let t = Tmp::new("inline");
    let g = t.write(
        "c.toml",
        "recipes = { claude = { mount_config = false }, qwen = { hosts = [] } }\n",
    );
    remember_consent(&g, "claude", true).unwrap();
    remember_consent(&g, "qwen", false).unwrap();
    let s = load_files(Some(&g), None).unwrap();
    assert_eq!(
        s.recipes["claude"].mount_config.as_ref().map(|v| v.value),
        Some(true)
    );
    assert_eq!(
        s.recipes["qwen"].mount_config.as_ref().map(|v| v.value),
        Some(false)
    );

    let g = t.write("d.toml", "recipes.codex.mount_config = false # dotted\n");
    remember_consent(&g, "codex", true).unwrap();
    remember_consent(&g, "opencode", true).unwrap();
    let text = std::fs::read_to_string(&g).unwrap();
    assert!(
        text.starts_with("recipes.codex.mount_config = true # dotted\n"),
        "{text}"
    );
    let s = load_files(Some(&g), None).unwrap();
    assert_eq!(
        s.recipes["codex"].mount_config.as_ref().map(|v| v.value),
        Some(true)
    );
    assert_eq!(
        s.recipes["opencode"].mount_config.as_ref().map(|v| v.value),
        Some(true)
    );

    // A `recipes` that is not a table is reported, and the file left alone.
    let g = t.write("e.toml", "recipes = 3\n");
    let e = remember_consent(&g, "claude", true).unwrap_err().to_string();
    assert!(e.contains("`recipes` is not a table"), "{e}");
    assert_eq!(std::fs::read_to_string(&g).unwrap(), "recipes = 3\n");
    // Bad agent names are refused.
    assert!(remember_consent(&g, "../x", true).is_err());
}

#[test]
fn show_lists_every_key_with_its_origin_aligned() {
    let t = Tmp::new("show");
    let g = t.write("g.toml", "runtime = \"podman\"\n[env]\nTOKEN = \"t\"\n");
    let p = t.write(
        "p/corral.toml",
        "image = \"localhost/x\"\n[recipes.claude]\nmount_config = true\n",
    );
    let flags = Flags {
        volumes: vec!["/a:/b:ro".into()],
        ..Flags::default()
    };
    let out = load(Some(&g), Some(&p), &flags).unwrap().show();
    let lines: Vec<&str> = out.lines().collect();
    let row = |key: &str| {
        *lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no `{key}` in\n{out}"))
    };
    let words = |key: &str| row(key).split_whitespace().collect::<Vec<_>>();
    let gp = g.display().to_string();
    let pp = p.display().to_string();
    assert_eq!(words("policy"), ["policy", "(unset)", "(default)"]);
    assert_eq!(
        words("image"),
        ["image", "localhost/x", "(project", &format!("{pp}:1)")]
    );
    assert_eq!(
        words("runtime"),
        ["runtime", "podman", "(global", &format!("{gp}:1)")]
    );
    assert_eq!(words("volumes"), ["volumes", "/a:/b:ro", "(flag", "--volume)"]);
    assert_eq!(
        words("env.TOKEN"),
        ["env.TOKEN", "t", "(global", &format!("{gp}:3)")]
    );
    assert_eq!(words("ui.listen"), ["ui.listen", "127.0.0.1:18080", "(default)"]);
    assert_eq!(words("shadow"), ["shadow", "false", "(default)"]);
    assert_eq!(
        words("recipes.claude.mount_config"),
        [
            "recipes.claude.mount_config",
            "true",
            "(project",
            &format!("{pp}:3)")
        ]
    );
    // Aligned: every origin starts in the same column.
    let cols: Vec<usize> = lines.iter().map(|l| l.rfind(" (").unwrap()).collect();
    assert!(cols.windows(2).all(|w| w[0] == w[1]), "{out}");
}

#[test]
fn find_project_returns_the_nearest_root() {
    let t = Tmp::new("find");
    t.write("a/corral.toml", "");
    t.write("a/b/c/corral.toml", "");
    std::fs::create_dir_all(t.0.join("a/b/c/d/e")).unwrap();
    std::fs::create_dir_all(t.0.join("a/x")).unwrap();
    assert_eq!(find_project(&t.0.join("a/b/c/d/e")), Some(t.0.join("a/b/c")));
    assert_eq!(find_project(&t.0.join("a/x")), Some(t.0.join("a")));
    assert_eq!(find_project(&t.0.join("a")), Some(t.0.join("a")));
    // A directory named corral.toml does not make a project.
    std::fs::create_dir_all(t.0.join("q/corral.toml")).unwrap();
    let found = find_project(&t.0.join("q"));
    assert!(found.is_none_or(|f| !f.starts_with(&t.0)));
}

#[test]
fn proxy_table_secrets_hosts_and_roots_with_origins() {
    use corral_runtime::config::{SecretFrom, SecretSpec};
    let t = Tmp::new("proxy");
    let g = t.write(
        "global.toml",
        "[proxy]\nupstream_ca = [\"ca/one.pem\"]\nadd_hosts = [\"git.internal:10.0.0.5\"]\n\n[proxy.secrets]\nGH = \"env:GH_TOKEN\"\nNPM = { from = \"file:npm.txt\", bodies = true }\n",
    );
    let p = t.write(
        "proj/corral.toml",
        "[proxy]\nupstream_ca = [\"two.pem\"]\nadd_hosts = [\"GIT.internal:10.0.0.6\", \"v6.internal:[2001:db8::1]\"]\n",
    );
    let s = load_files(Some(&g), Some(&p)).unwrap();
    let roots: Vec<_> = s.proxy.upstream_ca.iter().map(|v| v.value.clone()).collect();
    assert_eq!(roots, vec![t.0.join("ca/one.pem"), t.0.join("proj/two.pem")]);
    assert_eq!(s.proxy.upstream_ca[1].origin, project(&p, 2));
    // The project's entry for the same name (any case) replaces the global one.
    let hosts: Vec<_> = s.proxy.add_hosts.iter().map(|v| v.value.clone()).collect();
    assert_eq!(
        hosts,
        vec![
            ("git.internal".to_string(), "10.0.0.6".parse().unwrap()),
            ("v6.internal".to_string(), "2001:db8::1".parse().unwrap()),
        ]
    );
    assert_eq!(
        s.proxy.secrets["GH"].value,
        SecretSpec {
            from: SecretFrom::Env("GH_TOKEN".into()),
            bodies: false
        }
    );
    assert_eq!(s.proxy.secrets["GH"].origin, global(&g, 6));
    assert_eq!(
        s.proxy.secrets["NPM"].value,
        SecretSpec {
            from: SecretFrom::File(t.0.join("npm.txt")),
            bodies: true
        }
    );
    // Flags: a secret's source (its `bodies` setting kept), another root, a host.
    let flags = Flags {
        secrets: vec!["NPM=env:NPM_TOKEN".into(), "PLAIN".into()],
        upstream_ca: vec![PathBuf::from("/etc/extra.pem")],
        add_hosts: vec!["api.test:127.0.0.1".into()],
        ..Flags::default()
    };
    let s = load(Some(&g), Some(&p), &flags).unwrap();
    assert_eq!(
        s.proxy.secrets["NPM"].value,
        SecretSpec {
            from: SecretFrom::Env("NPM_TOKEN".into()),
            bodies: true
        }
    );
    assert_eq!(s.proxy.secrets["NPM"].origin, flag("--secret"));
    assert_eq!(
        s.proxy.secrets["PLAIN"].value.from,
        SecretFrom::Env("PLAIN".into())
    );
    assert_eq!(s.proxy.upstream_ca.len(), 3);
    assert_eq!(s.proxy.add_hosts.len(), 3);
    let shown = s.show();
    assert!(shown.contains("proxy.secrets.NPM"), "{shown}");
    assert!(shown.contains("env:NPM_TOKEN (headers and bodies)"), "{shown}");
}

#[test]
fn bad_proxy_values_say_what_and_where() {
    let (p, e) = error_of("[proxy.secrets]\nTOKEN = \"s3cr3t\"\n");
    assert!(e.contains(&format!("{}:2:9", p.display())), "{e}");
    assert!(e.contains("neither `env:VARIABLE` nor `file:PATH`"), "{e}");
    // The value itself is not repeated back beyond what the user wrote.
    let (_, e) = error_of("[proxy]\nadd_hosts = [\"nocolon\"]\n");
    assert!(e.contains("`nocolon` is not `NAME:IP`"), "{e}");
    let (_, e) = error_of("[proxy]\nadd_hosts = [\"bad_name:10.0.0.1\"]\n");
    assert!(e.contains("`bad_name` is not a host name"), "{e}");
    let (_, e) = error_of("[proxy.secrets]\n\"A-B\" = \"env:X\"\n");
    assert!(e.contains("name `A-B` is invalid"), "{e}");
    let (_, e) = error_of("[proxy]\nsecret = 1\n");
    assert!(e.contains("unknown field `secret`"), "{e}");
    let bad = Flags {
        secrets: vec!["X=literal".into()],
        ..Flags::default()
    };
    let e = load(None, None, &bad).unwrap_err().to_string();
    assert!(e.contains("--secret") && e.contains("neither"), "{e}");
    let bad = Flags {
        add_hosts: vec!["h:not-an-ip".into()],
        ..Flags::default()
    };
    let e = load(None, None, &bad).unwrap_err().to_string();
    assert!(e.contains("--add-host"), "{e}");
}

#[test]
fn secret_sources_read_and_refuse_what_could_split_a_header() {
    use corral_runtime::config::SecretFrom;
    let t = Tmp::new("secret-src");
    let f = t.write("tok", "abc def\n");
    assert_eq!(SecretFrom::File(f).read(), Ok("abc def".to_string()));
    let f = t.write("crlf", "abc\r\nX-Injected: 1\n");
    assert!(SecretFrom::File(f)
        .read()
        .unwrap_err()
        .contains("control character"));
    let f = t.write("empty", "\n");
    assert!(SecretFrom::File(f).read().unwrap_err().contains("empty"));
    let missing = SecretFrom::Env("CORRAL_TEST_SURELY_UNSET_VAR".into()).read();
    assert!(missing
        .unwrap_err()
        .contains("CORRAL_TEST_SURELY_UNSET_VAR is not set"));
}

#[test]
fn mcp_limits_with_origins_and_bounds() {
    let t = Tmp::new("mcp");
    let g = t.write("global.toml", "[mcp]\nmax_message = \"1MiB\"\nmax_batch = 8\n");
    let p = t.write("proj/corral.toml", "[mcp]\nmax_batch = 16\n");
    let s = load_files(Some(&g), Some(&p)).unwrap();
    assert_eq!(s.mcp.max_message.value, 1 << 20);
    assert_eq!(s.mcp.max_message.origin, global(&g, 2));
    assert_eq!(s.mcp.max_batch.value, 16);
    assert_eq!(s.mcp.max_batch.origin, project(&p, 2));
    let l = s.mcp.limits();
    assert_eq!((l.max_message, l.max_batch), (1 << 20, 16));
    let shown = s.show();
    assert!(
        shown.contains("mcp.max_message") && shown.contains("1048576 bytes"),
        "{shown}"
    );
    // The defaults are the MCP layer's.
    let d = load_files(None, None).unwrap();
    assert_eq!(d.mcp.limits(), corral_mcp::Limits::default());
    // Out of bounds, or not a size: what and where.
    let (p, e) = error_of("[mcp]\nmax_message = \"1GiB\"\n");
    assert!(e.contains(&format!("{}:2:", p.display())), "{e}");
    assert!(e.contains("not between 1KiB and 256MiB"), "{e}");
    let (_, e) = error_of("[mcp]\nmax_message = \"lots\"\n");
    assert!(e.contains("is not a size"), "{e}");
    let (_, e) = error_of("[mcp]\nmax_batch = 0\n");
    assert!(e.contains("mcp.max_batch 0 is not between 1 and 10000"), "{e}");
    let (_, e) = error_of("[mcp]\nlimit = 1\n");
    assert!(e.contains("unknown field `limit`"), "{e}");
}

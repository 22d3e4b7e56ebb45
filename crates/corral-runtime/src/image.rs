//! The agents image: builds `images/agents/Containerfile` (embedded in this
//! crate, so an installed binary needs no source tree) with podman or docker.
//!
//! Where no container registry is reachable, the Debian base is made here:
//! `debootstrap` into a temporary directory, then `tar | <engine> import`.
//! Everything else the image needs comes from package registries (Debian
//! mirrors, the npm registry).
//!
//! This module only builds and inspects images; it never runs a session and
//! never removes an image it was not asked to remove.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// `images/agents/Containerfile`, as built into this binary.
pub const CONTAINERFILE: &str = include_str!("../../../images/agents/Containerfile");

/// `images/agents/build-ca/README`: the directory of CAs trusted during the
/// build only.
const BUILD_CA_README: &str = include_str!("../../../images/agents/build-ca/README");

/// Where hosts keep locally added CA certificates (Debian and Ubuntu,
/// Fedora and RHEL, Arch). `corral image build` trusts these during the
/// build, for networks that inspect TLS on the way to the registries.
pub const HOST_CA_DIRS: [&str; 3] = [
    "/usr/local/share/ca-certificates",
    "/etc/pki/ca-trust/source/anchors",
    "/etc/ca-certificates/trust-source/anchors",
];

/// The tag `corral image build` gives the agents image by default.
pub const DEFAULT_TAG: &str = "localhost/corral-agents:latest";

/// The base the Containerfile names (its `BASE` build argument).
pub const DEFAULT_BASE: &str = "docker.io/library/debian:bookworm-slim";

/// The tag of the base built with debootstrap when [`DEFAULT_BASE`] cannot
/// be pulled.
pub const LOCAL_BASE: &str = "localhost/corral-debian:bookworm";

/// The Debian suite and mirror the local base is bootstrapped from.
const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";

/// The agents in the image: (command, npm package).
pub const AGENTS: [(&str, &str); 5] = [
    ("claude", "@anthropic-ai/claude-code"),
    ("codex", "@openai/codex"),
    ("gemini", "@google/gemini-cli"),
    ("qwen", "@qwen-code/qwen-code"),
    ("opencode", "opencode-ai"),
];

/// A failure to build or inspect an image. Each names the missing piece.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Neither podman nor docker is on `PATH`.
    #[error("no container engine: neither `podman` nor `docker` is on PATH")]
    NoEngine,
    /// The requested engine is not on `PATH`.
    #[error("`{0}` is not on PATH")]
    EngineMissing(Engine),
    /// The engine is installed but does not answer (`docker info` fails
    /// without a daemon, for instance).
    #[error("`{engine} info` failed: {detail}")]
    EngineUnusable {
        /// The engine.
        engine: Engine,
        /// The last line it printed.
        detail: String,
    },
    /// An engine name other than `podman` or `docker`.
    #[error("unknown engine `{0}`: expected `podman` or `docker`")]
    UnknownEngine(String),
    /// Building the base needs root, for debootstrap.
    #[error("building the Debian base with debootstrap needs root; run as root or pass `--base IMAGE`")]
    NotRoot,
    /// debootstrap is missing and apt-get could not install it.
    #[error("`debootstrap` is not installed and could not be installed ({reason}); install it or pass `--base IMAGE`")]
    NoDebootstrap {
        /// Why apt-get could not help.
        reason: String,
    },
    /// debootstrap ran and failed.
    #[error("debootstrap of `{SUITE}` from `{MIRROR}` failed ({status}); its output is above; pass `--base IMAGE` to use an existing base")]
    Debootstrap {
        /// Its exit status.
        status: ExitStatus,
    },
    /// A command could not be started.
    #[error("cannot run `{program}`")]
    Spawn {
        /// The program.
        program: String,
        /// The error from exec.
        source: io::Error,
    },
    /// A command ran and failed.
    #[error("`{command}` failed ({status}){detail}")]
    Failed {
        /// The command line, shortened.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// `: ` and the last line of its error output, when captured.
        detail: String,
    },
    /// A `--ca-cert` file that holds no PEM certificate.
    #[error("`{0}` holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)")]
    NotPem(PathBuf),
    /// A command printed something unexpected.
    #[error("`{command}` printed `{output}`")]
    BadOutput {
        /// The command line.
        command: String,
        /// What it printed.
        output: String,
    },
    /// A file or directory operation failed.
    #[error("cannot {what} `{path}`")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// A container engine, driven through its CLI (the sessions' own kind).
pub use crate::engine::Kind as Engine;

impl Engine {
    /// The program name.
    pub fn program(self) -> &'static str {
        match self {
            Engine::Podman => "podman",
            Engine::Docker => "docker",
        }
    }

    /// The engine to use: podman if it is on `PATH`, else docker.
    pub fn detect() -> Result<Engine, ImageError> {
        [Engine::Podman, Engine::Docker]
            .into_iter()
            .find(|e| find_program(e.program()).is_some())
            .ok_or(ImageError::NoEngine)
    }

    /// Fails with a clear error if the engine is missing or does not answer.
    pub fn check(self) -> Result<(), ImageError> {
        let cli = Cli::new(self)?;
        cli.check()?;
        cli.close()
    }

    /// Whether `image` is in the engine's local store.
    pub fn has_image(self, image: &str) -> Result<bool, ImageError> {
        Cli::new(self)?.has_image(image)
    }

    /// The size in bytes of a local image.
    pub fn image_size(self, image: &str) -> Result<u64, ImageError> {
        let cli = Cli::new(self)?;
        let mut cmd = cli.command();
        cmd.args(["image", "inspect", "--format", "{{.Size}}", image]);
        let text = checked_output(&mut cmd)?;
        text.trim().parse().map_err(|_| ImageError::BadOutput {
            command: describe(&cmd),
            output: text,
        })
    }

    /// Removes a local image by tag.
    pub fn remove_image(self, image: &str) -> Result<(), ImageError> {
        checked_output(Cli::new(self)?.command().args(["rmi", image])).map(drop)
    }

    /// Runs `command --version` in a throwaway container of `image`, without
    /// network, and returns what it printed.
    pub fn version_in(self, image: &str, command: &str) -> Result<String, ImageError> {
        let cli = Cli::new(self)?;
        let mut cmd = cli.command();
        cmd.args(["run", "--rm", "--network=none", image, command, "--version"]);
        checked_output(&mut cmd).map(|s| s.trim().to_string())
    }
}

/// One engine's CLI with the environment it needs here (see [`podman_conf`]).
struct Cli {
    engine: Engine,
    conf: Option<(TempDir, PathBuf)>,
}

impl Cli {
    fn new(engine: Engine) -> Result<Cli, ImageError> {
        let conf = match engine {
            Engine::Podman => podman_conf()?,
            Engine::Docker => None,
        };
        Ok(Cli { engine, conf })
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(self.engine.program());
        if let Some((_, file)) = &self.conf {
            cmd.env("CONTAINERS_CONF", file);
        }
        cmd
    }

    /// Fails with a clear error if the engine is missing or does not answer.
    fn check(&self) -> Result<(), ImageError> {
        if find_program(self.engine.program()).is_none() {
            return Err(ImageError::EngineMissing(self.engine));
        }
        let out = capture(self.command().arg("info"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(ImageError::EngineUnusable {
                engine: self.engine,
                detail: last_line(&out.stderr),
            })
        }
    }

    fn has_image(&self, image: &str) -> Result<bool, ImageError> {
        let out = capture(
            self.command()
                .args(["image", "inspect", "--format", "{{.Id}}", image]),
        )?;
        Ok(out.status.success())
    }

    fn close(self) -> Result<(), ImageError> {
        match self.conf {
            Some((dir, _)) => dir.close(),
            None => Ok(()),
        }
    }
}

impl FromStr for Engine {
    type Err = ImageError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "podman" => Ok(Engine::Podman),
            "docker" => Ok(Engine::Docker),
            _ => Err(ImageError::UnknownEngine(s.to_string())),
        }
    }
}

/// What `corral image build` was asked to do.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The tag of the built image.
    pub tag: String,
    /// The base image; `None` for [`DEFAULT_BASE`], or a local base built
    /// with debootstrap if that cannot be pulled.
    pub base: Option<String>,
    /// The engine; `None` to detect.
    pub engine: Option<Engine>,
    /// Rebuild every layer, and the local base.
    pub no_cache: bool,
    /// A Containerfile to build instead of the embedded one; its directory
    /// is the build context. A base is chosen for it only if it declares
    /// `ARG BASE`, and the build CAs are not staged for it.
    pub file: Option<PathBuf>,
    /// Extra `--build-arg KEY=VALUE`s (pinning agent versions, say).
    pub build_args: Vec<String>,
    /// PEM CA certificates to trust during the build (not in the image).
    pub ca_certs: Vec<PathBuf>,
    /// Also trust the host's local CAs ([`HOST_CA_DIRS`]) during the build.
    pub host_cas: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            tag: DEFAULT_TAG.to_string(),
            base: None,
            engine: None,
            no_cache: false,
            file: None,
            build_args: Vec::new(),
            ca_certs: Vec::new(),
            host_cas: true,
        }
    }
}

/// What a build did.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// The engine used.
    pub engine: Engine,
    /// The tag built.
    pub tag: String,
    /// The base it was built on (`--build-arg BASE`), if any.
    pub base: Option<String>,
    /// How long building the local base took, if it was built.
    pub base_built_in: Option<Duration>,
    /// How long the image build took (without the base).
    pub built_in: Duration,
}

/// Builds the agents image, reporting each step to `step`. The engine's and
/// debootstrap's own output goes to this process's stdout and stderr.
pub fn build(opts: &BuildOptions, step: &mut dyn FnMut(&str)) -> Result<BuildReport, ImageError> {
    // The build context first, so that a wrong path fails before any work:
    // the given file's directory, or a temporary one holding the embedded
    // Containerfile and the CAs the build trusts.
    let mut context = None;
    let (file, context_dir, uses_base) = match &opts.file {
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(io_error("read", file))?;
            let dir = file
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            (file.clone(), dir.to_path_buf(), text.contains("ARG BASE"))
        }
        None => {
            let dir = context.insert(TempDir::new("build")?);
            let file = dir.path().join("Containerfile");
            std::fs::write(&file, CONTAINERFILE).map_err(io_error("write", &file))?;
            stage_cas(&dir.path().join("build-ca"), opts, step)?;
            (file, dir.path().to_path_buf(), true)
        }
    };

    let engine = match opts.engine {
        Some(e) => e,
        None => Engine::detect()?,
    };
    let cli = Cli::new(engine)?;
    cli.check()?;
    step(&format!("engine: {engine}"));

    // A Containerfile of one's own that names no `ARG BASE` has its own
    // FROM (`localhost/corral-agents:latest`, say): no base to choose.
    let mut base_built_in = None;
    let base = match &opts.base {
        Some(base) => Some(base.clone()),
        None if uses_base => {
            let (base, took) = choose_base(&cli, opts.no_cache, step)?;
            base_built_in = took;
            Some(base)
        }
        None => None,
    };

    let mut cmd = cli.command();
    cmd.arg("build")
        .arg("--tag")
        .arg(&opts.tag)
        .arg("--file")
        .arg(&file);
    if let Some(base) = &base {
        cmd.arg("--build-arg").arg(format!("BASE={base}"));
    }
    for arg in &opts.build_args {
        cmd.arg("--build-arg").arg(arg);
    }
    if opts.no_cache {
        cmd.arg("--no-cache");
    }
    cmd.arg(&context_dir);
    step(&format!("building `{}`: {}", opts.tag, describe(&cmd)));
    let started = Instant::now();
    run(&mut cmd)?;
    let built_in = started.elapsed();
    if let Some(dir) = context {
        dir.close()?;
    }
    cli.close()?;
    step(&format!("built `{}` in {:.0?}", opts.tag, built_in));
    Ok(BuildReport {
        engine,
        tag: opts.tag.clone(),
        base,
        base_built_in,
        built_in,
    })
}

/// Fills the context's `build-ca/` with the CAs the build trusts.
fn stage_cas(dir: &Path, opts: &BuildOptions, step: &mut dyn FnMut(&str)) -> Result<(), ImageError> {
    std::fs::create_dir(dir).map_err(io_error("create", dir))?;
    let readme = dir.join("README");
    std::fs::write(&readme, BUILD_CA_README).map_err(io_error("write", &readme))?;
    let mut certs = Vec::new();
    if opts.host_cas {
        for root in HOST_CA_DIRS {
            collect_pem(Path::new(root), 2, &mut certs);
        }
    }
    for file in &opts.ca_certs {
        let text = std::fs::read_to_string(file).map_err(io_error("read", file))?;
        if !text.contains("-----BEGIN CERTIFICATE-----") {
            return Err(ImageError::NotPem(file.clone()));
        }
        certs.push(file.clone());
    }
    for (i, cert) in certs.iter().enumerate() {
        let stem = cert
            .file_stem()
            .map_or_else(|| "ca".into(), |s| s.to_string_lossy());
        let to = dir.join(format!("{i:02}-{stem}.crt"));
        std::fs::copy(cert, &to).map_err(io_error("copy", cert))?;
    }
    if !certs.is_empty() {
        let names: Vec<_> = certs.iter().map(|c| c.display().to_string()).collect();
        step(&format!("trusting during the build only: {}", names.join(", ")));
    }
    Ok(())
}

/// PEM certificate files under `dir`, `depth` levels down; unreadable or
/// missing directories are skipped.
fn collect_pem(dir: &Path, depth: u32, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            if depth > 0 {
                collect_pem(&path, depth - 1, out);
            }
        } else if std::fs::read_to_string(&path).is_ok_and(|t| t.contains("-----BEGIN CERTIFICATE-----")) {
            out.push(path);
        }
    }
}

/// Picks the base when none was given: [`DEFAULT_BASE`] if present, else
/// [`LOCAL_BASE`] if present (and not `no_cache`), else [`DEFAULT_BASE`]
/// pulled, else [`LOCAL_BASE`] bootstrapped. The local base comes before a
/// pull so that an offline host does not wait on a registry every build.
fn choose_base(
    cli: &Cli,
    no_cache: bool,
    step: &mut dyn FnMut(&str),
) -> Result<(String, Option<Duration>), ImageError> {
    if cli.has_image(DEFAULT_BASE)? {
        step(&format!("base: `{DEFAULT_BASE}` (present)"));
        return Ok((DEFAULT_BASE.to_string(), None));
    }
    if !no_cache && cli.has_image(LOCAL_BASE)? {
        step(&format!("base: `{LOCAL_BASE}` (present; --no-cache rebuilds it)"));
        return Ok((LOCAL_BASE.to_string(), None));
    }
    step(&format!("pulling `{DEFAULT_BASE}`"));
    let out = capture(cli.command().args(["pull", DEFAULT_BASE]))?;
    if out.status.success() {
        step(&format!("base: `{DEFAULT_BASE}` (pulled)"));
        return Ok((DEFAULT_BASE.to_string(), None));
    }
    step(&format!(
        "cannot pull `{DEFAULT_BASE}` ({}); building `{LOCAL_BASE}` with debootstrap",
        last_line(&out.stderr)
    ));
    let started = Instant::now();
    bootstrap(cli, LOCAL_BASE, step)?;
    Ok((LOCAL_BASE.to_string(), Some(started.elapsed())))
}

/// Builds a minimal Debian bookworm image tagged `tag` with debootstrap
/// (installing debootstrap with apt-get if it is missing) and imports it.
/// Needs root.
pub fn build_base(engine: Engine, tag: &str, step: &mut dyn FnMut(&str)) -> Result<(), ImageError> {
    let cli = Cli::new(engine)?;
    cli.check()?;
    bootstrap(&cli, tag, step)?;
    cli.close()
}

fn bootstrap(cli: &Cli, tag: &str, step: &mut dyn FnMut(&str)) -> Result<(), ImageError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(ImageError::NotRoot);
    }
    let debootstrap = ensure_debootstrap(step)?;
    let tmp = TempDir::new("base")?;
    let rootfs = tmp.path().join("rootfs");
    let mut cmd = Command::new(&debootstrap);
    cmd.args(["--variant=minbase", SUITE]).arg(&rootfs).arg(MIRROR);
    step(&format!("bootstrapping Debian: {}", describe(&cmd)));
    let status = spawn(&mut cmd)?
        .wait()
        .map_err(|source| spawn_error(&cmd, source))?;
    if !status.success() {
        return Err(ImageError::Debootstrap { status });
    }
    slim_rootfs(&rootfs)?;

    let engine = cli.engine;
    step(&format!(
        "importing it: tar -C {} -c . | {engine} import - {tag}",
        rootfs.display()
    ));
    let mut tar = Command::new("tar");
    tar.arg("-C")
        .arg(&rootfs)
        .args(["--numeric-owner", "-c", "."])
        .stdout(Stdio::piped());
    let mut tar_child = spawn(&mut tar)?;
    let Some(tar_out) = tar_child.stdout.take() else {
        return Err(spawn_error(&tar, io::Error::other("no stdout pipe")));
    };
    let mut import = cli.command();
    import.args([
        "import",
        "--change",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--change",
        "CMD [\"bash\"]",
        "-",
        tag,
    ]);
    import
        .stdin(Stdio::from(tar_out))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let imported = spawn(&mut import)?
        .wait_with_output()
        .map_err(|source| spawn_error(&import, source))?;
    let tar_status = tar_child.wait().map_err(|source| spawn_error(&tar, source))?;
    if !tar_status.success() {
        return Err(failed(&tar, tar_status, &[]));
    }
    if !imported.status.success() {
        return Err(failed(&import, imported.status, &imported.stderr));
    }
    tmp.close()?;
    step(&format!("base `{tag}` ready"));
    Ok(())
}

/// Finds debootstrap, or installs it with apt-get (as the brief says, loudly).
fn ensure_debootstrap(step: &mut dyn FnMut(&str)) -> Result<PathBuf, ImageError> {
    if let Some(path) = find_program("debootstrap") {
        return Ok(path);
    }
    if find_program("apt-get").is_none() {
        return Err(ImageError::NoDebootstrap {
            reason: "no apt-get".into(),
        });
    }
    step("debootstrap is not installed; installing it with `apt-get install debootstrap`");
    let install = || {
        let mut cmd = Command::new("apt-get");
        cmd.args(["install", "-y", "--no-install-recommends", "debootstrap"]);
        cmd.env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut cmd)
    };
    if install().is_err() {
        step("retrying after `apt-get update`");
        let mut update = Command::new("apt-get");
        update.arg("update");
        run(&mut update)
            .and_then(|()| install())
            .map_err(|e| ImageError::NoDebootstrap {
                reason: e.to_string(),
            })?;
    }
    find_program("debootstrap").ok_or_else(|| ImageError::NoDebootstrap {
        reason: "apt-get did not install it".into(),
    })
}

/// Makes a bootstrapped tree into a container base: the apt sources a
/// container wants (updates and security too), no host identity, no package
/// caches, no documentation but copyrights, and dpkg told to skip
/// documentation from now on. Nothing here follows a symlink out of `root`.
fn slim_rootfs(root: &Path) -> Result<(), ImageError> {
    let write = |rel: &str, text: &str| {
        let path = inside(root, rel)?;
        remove_file(&path)?;
        std::fs::write(&path, text).map_err(io_error("write", &path))
    };
    write(
        "etc/apt/sources.list.d/debian.sources",
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n\
         Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
         Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n\
         Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
    )?;
    write(
        "etc/dpkg/dpkg.cfg.d/corral-slim",
        "path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n\
         path-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n\
         path-exclude /usr/share/locale/*\n",
    )?;
    // The host's: the engine provides its own at run time.
    write("etc/resolv.conf", "")?;
    write("etc/hostname", "localhost\n")?;
    remove_file(&inside(root, "etc/apt/sources.list")?)?;
    // apt wants its `partial` directories.
    let apt_dirs = |name: &OsStr| name == "partial" || name == "archives";
    for rel in ["var/cache/apt/archives", "var/cache/apt", "var/lib/apt/lists"] {
        clear(&inside(root, rel)?, &apt_dirs)?;
    }
    for rel in ["usr/share/man", "usr/share/info", "usr/share/locale"] {
        clear(&inside(root, rel)?, &|_| false)?;
    }
    let docs = inside(root, "usr/share/doc")?;
    for entry in std::fs::read_dir(&docs)
        .map_err(io_error("read", &docs))?
        .flatten()
    {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            clear(&entry.path(), &|name| name == "copyright")?;
        }
    }
    Ok(())
}

/// `root/rel`, unless a directory on the way is a symlink.
fn inside(root: &Path, rel: &str) -> Result<PathBuf, ImageError> {
    let mut path = root.to_path_buf();
    let mut parts = rel.split('/').peekable();
    while let Some(part) = parts.next() {
        path.push(part);
        let is_link = path.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink());
        if is_link && parts.peek().is_some() {
            let source = io::Error::other("a symlink on the way");
            return Err(ImageError::Io {
                what: "enter",
                path,
                source,
            });
        }
    }
    Ok(path)
}

/// Removes what is in `dir` (a missing `dir` is empty) but the names `keep`
/// spares, without following symlinks.
fn clear(dir: &Path, keep: &dyn Fn(&OsStr) -> bool) -> Result<(), ImageError> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other.map_err(io_error("read", dir))?,
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if keep(&entry.file_name()) {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path).map_err(io_error("remove", &path))?;
        } else {
            remove_file(&path)?;
        }
    }
    Ok(())
}

fn remove_file(path: &Path) -> Result<(), ImageError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error("remove", path)(e)),
        _ => Ok(()),
    }
}

/// The containers.conf sessions use ([`crate::engine::PODMAN_CONF`]), in a
/// private temporary directory; a `CONTAINERS_CONF` already set wins.
fn podman_conf() -> Result<Option<(TempDir, PathBuf)>, ImageError> {
    const CONF: &str = crate::engine::PODMAN_CONF;
    if std::env::var_os("CONTAINERS_CONF").is_some() {
        return Ok(None);
    }
    let dir = TempDir::new("conf")?;
    let file = dir.path().join("containers.conf");
    std::fs::write(&file, CONF).map_err(io_error("write", &file))?;
    Ok(Some((dir, file)))
}

/// A private temporary directory, removed on `close` or drop. Removal first
/// detaches any mount left inside (debootstrap mounts /proc in its target)
/// and leaves the directory alone if one stays.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Result<TempDir, ImageError> {
        use std::os::unix::fs::DirBuilderExt;
        let parent = std::env::var_os("TMPDIR").map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from);
        let path = parent.join(format!(
            "corral-image-{what}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(io_error("create", &path))?;
        Ok(TempDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn close(mut self) -> Result<(), ImageError> {
        let path = std::mem::take(&mut self.0);
        remove_tree(&path).map_err(|source| ImageError::Io {
            what: "remove",
            path,
            source,
        })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = remove_tree(&self.0);
        }
    }
}

fn remove_tree(path: &Path) -> io::Result<()> {
    let mounted = || mounts_under(path);
    let mut inside = mounted()?;
    inside.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    for m in &inside {
        let _ = nix::mount::umount2(m.as_path(), nix::mount::MntFlags::MNT_DETACH);
    }
    if !mounted()?.is_empty() {
        return Err(io::Error::other("a mount is still inside it"));
    }
    std::fs::remove_dir_all(path)
}

/// Mount points strictly inside `dir`, from /proc/self/mountinfo.
fn mounts_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(corral_kernel::cgroup::unescape_mountinfo(field)))
        .filter(|m| m != dir && m.starts_with(dir))
        .collect())
}

/// The first executable `name` on `PATH` (and the sbin directories, which a
/// non-login root shell may lack).
fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Wraps an io error with what was being done to which path.
fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ImageError {
    let path = path.to_path_buf();
    move |source| ImageError::Io { what, path, source }
}

/// The command line, for messages.
fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

fn spawn_error(cmd: &Command, source: io::Error) -> ImageError {
    ImageError::Spawn {
        program: cmd.get_program().to_string_lossy().into_owned(),
        source,
    }
}

fn spawn(cmd: &mut Command) -> Result<std::process::Child, ImageError> {
    cmd.spawn().map_err(|source| spawn_error(cmd, source))
}

fn failed(cmd: &Command, status: ExitStatus, stderr: &[u8]) -> ImageError {
    let line = last_line(stderr);
    let detail = if line.is_empty() {
        String::new()
    } else {
        format!(": {line}")
    };
    ImageError::Failed {
        command: describe(cmd),
        status,
        detail,
    }
}

/// Runs with inherited stdio; fails unless it exits 0.
fn run(cmd: &mut Command) -> Result<(), ImageError> {
    let status = spawn(cmd)?.wait().map_err(|source| spawn_error(cmd, source))?;
    if status.success() {
        Ok(())
    } else {
        Err(failed(cmd, status, &[]))
    }
}

/// Runs with stdout and stderr captured, whatever the exit status.
fn capture(cmd: &mut Command) -> Result<Output, ImageError> {
    cmd.stdin(Stdio::null())
        .output()
        .map_err(|source| spawn_error(cmd, source))
}

/// Runs captured; fails unless it exits 0; returns stdout.
fn checked_output(cmd: &mut Command) -> Result<String, ImageError> {
    let out = capture(cmd)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(failed(cmd, out.status, &out.stderr))
    }
}

/// The line of an engine's error output worth quoting: the last, unless
/// that only points at `--help`.
fn last_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty()).rev();
    let last = lines.next().unwrap_or("");
    let help = last.starts_with("Run '") || last.starts_with("See '");
    lines.next().filter(|_| help).unwrap_or(last).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo() {
        use corral_kernel::cgroup::unescape_mountinfo as unescape_mount;
        assert_eq!(unescape_mount(r"/var/tmp/a\040b"), "/var/tmp/a b");
        assert_eq!(unescape_mount(r"/x\y"), r"/x\y");
    }

    #[test]
    fn quotes_the_error_not_the_help_pointer() {
        let docker =
            b"docker: Cannot connect to the Docker daemon.\nRun 'docker run --help' for more information\n";
        assert_eq!(last_line(docker), "docker: Cannot connect to the Docker daemon.");
        assert_eq!(last_line(b"a\nError: no such image\n\n"), "Error: no such image");
        assert_eq!(last_line(b""), "");
    }

    #[test]
    fn engine_names() {
        assert_eq!("podman".parse::<Engine>().ok(), Some(Engine::Podman));
        assert!("rkt".parse::<Engine>().is_err());
    }

    #[test]
    fn temp_dir_is_removed() {
        let dir = TempDir::new("unit").unwrap();
        let path = dir.path().to_path_buf();
        std::fs::write(path.join("f"), "x").unwrap();
        dir.close().unwrap();
        assert!(!path.exists());
    }
}

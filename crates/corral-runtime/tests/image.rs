//! The agents image: the embedded Containerfile, and (ignored by default) a
//! real build from a debootstrapped base.

use corral_runtime::image::{self, BuildOptions, Engine};
use std::path::Path;
use std::time::Instant;

#[test]
fn embedded_containerfile_matches_the_tree() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images/agents/Containerfile");
    let on_disk = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        image::CONTAINERFILE,
        on_disk,
        "rebuild: the embedded Containerfile is stale"
    );
}

#[test]
fn containerfile_installs_the_five_agents() {
    for (_, package) in image::AGENTS {
        assert!(
            image::CONTAINERFILE.contains(&format!("\"{package}@")),
            "{package} is not installed"
        );
    }
    assert!(image::CONTAINERFILE.contains("ARG BASE=docker.io/library/debian:bookworm-slim"));
    assert!(image::CONTAINERFILE.contains("--uid 1000"));
    assert!(image::CONTAINERFILE.contains("WORKDIR /workspace"));
}

/// Removes the images this test made, whatever happens.
struct Cleanup(Engine, Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for tag in self.1.iter().rev() {
            if self.0.has_image(tag).unwrap_or(false) {
                if let Err(e) = self.0.remove_image(tag) {
                    eprintln!("cannot remove `{tag}`: {e}");
                }
            }
        }
    }
}

// Slow: 98 s on the development VM (debootstrap 39 s, image build 57 s, both
// mostly downloads: Debian packages, Node, ~500 MB of agents). Needs root,
// podman, deb.debian.org and the npm registry (CI has all four); the images
// it makes have a unique tag and are removed.
#[test]
fn builds_from_debootstrap_and_agents_start() {
    let t = "builds_from_debootstrap_and_agents_start";
    if !corral_vmtest::is_root() {
        corral_vmtest::skip(t, "needs root (debootstrap, podman)");
        return;
    }
    let podman = std::process::Command::new("podman")
        .arg("--version")
        .output()
        .is_ok();
    if !podman {
        corral_vmtest::skip(t, "podman is not installed");
        return;
    }
    let engine = Engine::Podman;
    let unique = format!("{}-{:x}", std::process::id(), nanos());
    let base = format!("localhost/corral-test-base:{unique}");
    let tag = format!("localhost/corral-test-agents:{unique}");
    let _cleanup = Cleanup(engine, vec![base.clone(), tag.clone()]);
    let mut step = |s: &str| eprintln!("step: {s}");

    let started = Instant::now();
    image::build_base(engine, &base, &mut step).unwrap();
    let base_took = started.elapsed();

    let opts = BuildOptions {
        tag: tag.clone(),
        base: Some(base.clone()),
        engine: Some(engine),
        ..Default::default()
    };
    let report = image::build(&opts, &mut step).unwrap();
    eprintln!(
        "base {base_took:.1?}, image {:.1?}, size {} bytes",
        report.built_in,
        engine.image_size(&tag).unwrap()
    );

    for agent in ["claude", "codex"] {
        let version = engine.version_in(&tag, agent).unwrap();
        eprintln!("{agent} --version: {version}");
        assert!(version.chars().any(|c| c.is_ascii_digit()), "{agent}: {version}");
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

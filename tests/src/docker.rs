//! A private Docker engine for tests: Debian's `dockerd` (20.10, API 1.41) on a socket
//! in a temp dir, with its own data-root and exec-root, no bridge and no iptables
//! (the default bridge's 172.x addresses are off limits here), stopped by PID; and the
//! builder-stub image, made by `docker import` of one static binary (no registry).
//!
//! Containers run with `--network host` (or `none`), never the default bridge.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;

use crate::{Child, program, wait_until, workspace_root};

/// The stub image's name.
pub const STUB_IMAGE: &str = "local/builder-stub:latest";

/// A running private `dockerd`.
#[derive(Debug)]
pub struct Dockerd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Dockerd {
    /// Starts `dockerd` in a fresh temp dir and waits until it answers `/_ping`.
    pub fn start() -> Result<Dockerd> {
        let dir = tempfile::Builder::new().prefix("nw-docker").tempdir()?;
        let socket = dir.path().join("docker.sock");
        Self::start_on(dir, socket)
    }

    /// Starts `dockerd` serving `socket` (which may be watched by an agent already),
    /// with its state under `dir`.
    pub fn start_on(dir: tempfile::TempDir, socket: PathBuf) -> Result<Dockerd> {
        let mut dockerd = Dockerd {
            child: None,
            dir,
            socket,
        };
        dockerd.launch()?;
        Ok(dockerd)
    }

    fn launch(&mut self) -> Result<()> {
        let binary = program("dockerd", "docker.io")?;
        let root = self.dir.path();
        for sub in ["data", "exec"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        let args = [
            format!("--host=unix://{}", self.socket.display()),
            format!("--data-root={}", root.join("data").display()),
            format!("--exec-root={}", root.join("exec").display()),
            format!("--pidfile={}", root.join("docker.pid").display()),
            "--bridge=none".into(),
            "--iptables=false".into(),
            "--ip6tables=false".into(),
            "--storage-driver=overlay2".into(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = Child::spawn("dockerd", &binary, &args, &[])?;
        let ready = wait_until(Duration::from_secs(30), || {
            self.docker(&["version", "--format", "{{.Server.APIVersion}}"])
                .is_ok()
                || !child.is_running()
        });
        if !ready || !child.is_running() {
            bail!("dockerd did not answer; log:\n{}", child.log());
        }
        self.child = Some(child);
        Ok(())
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// dockerd's log so far.
    pub fn log(&self) -> String {
        self.child.as_ref().map(Child::log).unwrap_or_default()
    }

    /// Runs Debian's `docker` CLI (API 1.41) against this engine; stdout on success.
    pub fn docker(&self, args: &[&str]) -> Result<String> {
        let output = Command::new("/usr/bin/docker")
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .env("DOCKER_API_VERSION", "1.41")
            .env("DOCKER_CONFIG", self.dir.path().join("cli"))
            .output()
            .context("run /usr/bin/docker (install Debian's docker.io)")?;
        if !output.status.success() {
            bail!(
                "docker {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// Builds the builder stub (`gcc -static`) and imports it as [`STUB_IMAGE`], with
    /// the binary at `/block-builder` (so its process is named like the builder's)
    /// and at `/bin/sh` (Docker health checks run `/bin/sh -c PORT`).
    pub fn import_builder_stub(&self) -> Result<()> {
        let rootfs = self.dir.path().join("stub-rootfs");
        std::fs::create_dir_all(rootfs.join("bin"))?;
        build_stub(&rootfs.join("block-builder"))?;
        // Also the image's shell, for `--health-cmd PORT` (see the stub's source).
        std::fs::copy(rootfs.join("block-builder"), rootfs.join("bin/sh"))?;
        let tar = self.dir.path().join("stub.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()?;
        if !status.success() {
            bail!("tar of the stub rootfs failed");
        }
        let tar = tar.display().to_string();
        self.docker(&[
            "import",
            "-c",
            "ENTRYPOINT [\"/block-builder\"]",
            &tar,
            STUB_IMAGE,
        ])?;
        Ok(())
    }

    /// Runs the builder stub as container `block-builder` on the host network, its
    /// health check on `health_port`, reporting `version`; `extra` goes before the image
    /// (`--restart`, `--health-cmd`…). Returns the container ID.
    pub fn run_builder_stub(
        &self,
        health_port: u16,
        version: &str,
        extra: &[&str],
    ) -> Result<String> {
        let port = health_port.to_string();
        let mut args = vec!["run", "-d", "--name", "block-builder", "--network", "host"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[STUB_IMAGE, &port, version]);
        self.docker(&args)
    }

    /// Stops dockerd (SIGTERM, then SIGKILL after 20 s) and unmounts what it leaves
    /// mounted; the state stays for [`Dockerd::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.signal(Signal::SIGTERM);
            if child.wait_timeout(Duration::from_secs(20)).is_none() {
                let _ = child.signal(Signal::SIGKILL);
                let _ = child.wait_timeout(Duration::from_secs(5));
            }
        }
        self.unmount_leftovers();
    }

    /// Starts dockerd again on the same socket and state.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.launch()
    }

    /// dockerd can leave an nsfs mount at `<exec-root>/netns/default` (and container
    /// mounts when killed): unmount everything under the temp dir, deepest first.
    fn unmount_leftovers(&self) {
        let root = self.dir.path().display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut targets: Vec<String> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|t| t.starts_with(&root))
            .map(str::to_string)
            .collect();
        targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
        for target in targets {
            let _ = nix::mount::umount2(target.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // Containers die with the engine (no live-restore); then the mounts go.
        self.stop();
    }
}

/// Compiles `tests/fixtures/docker/builder_stub.c` statically to `out`.
pub fn build_stub(out: &Path) -> Result<()> {
    let gcc = program("gcc", "gcc and libc6-dev")?;
    let source = workspace_root().join("tests/fixtures/docker/builder_stub.c");
    let output = Command::new(gcc)
        .args(["-static", "-O2", "-s", "-o"])
        .arg(out)
        .arg(&source)
        .output()?;
    if !output.status.success() {
        bail!(
            "gcc -static {} failed (install gcc and libc6-dev): {}",
            source.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

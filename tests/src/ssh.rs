//! A real OpenSSH server (Debian's `openssh-server`) for the reward exporter's
//! CLI-over-SSH source: started on a free loopback port from a temp dir with its own
//! host key, `authorized_keys` and `sshd_config`, in the foreground (`-D -e`), and
//! stopped by PID. The client side (an identity and a known_hosts file holding the
//! server's host key) is made beside it, as an operator would set it up.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::{Child, free_port, program, wait_until};

/// A running sshd and the files a client needs to log in to it.
#[derive(Debug)]
pub struct SshServer {
    /// The sshd process.
    pub child: Child,
    /// Its loopback port.
    pub port: u16,
    /// The user to log in as (the one running the tests).
    pub user: String,
    /// The client's private key (mode 0600).
    pub identity_file: PathBuf,
    /// A known_hosts file with the server's host key for `[127.0.0.1]:PORT`.
    pub known_hosts: PathBuf,
    /// The temp dir holding all of it (and free for the test's own files).
    pub dir: tempfile::TempDir,
}

fn keygen(path: &Path, comment: &str) -> Result<()> {
    let status = std::process::Command::new(program("ssh-keygen", "openssh-client")?)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .status()
        .context("run ssh-keygen")?;
    if !status.success() {
        bail!("ssh-keygen -f {} failed: {status}", path.display());
    }
    Ok(())
}

impl SshServer {
    /// Generates the keys, writes the config and starts sshd; returns once it accepts
    /// connections.
    pub fn start() -> Result<SshServer> {
        let sshd = program("sshd", "openssh-server")?;
        let dir = tempfile::tempdir()?;
        let host_key = dir.path().join("ssh_host_ed25519_key");
        keygen(&host_key, "nodewatch-test-host")?;
        let identity_file = dir.path().join("id_ed25519");
        keygen(&identity_file, "nodewatch-test-client")?;
        let authorized_keys = dir.path().join("authorized_keys");
        std::fs::copy(dir.path().join("id_ed25519.pub"), &authorized_keys)?;
        let port = free_port();
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\n\
                 ListenAddress 127.0.0.1\n\
                 HostKey {host}\n\
                 PidFile none\n\
                 UsePAM no\n\
                 StrictModes no\n\
                 AuthorizedKeysFile {keys}\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\n\
                 AllowTcpForwarding no\n\
                 AllowAgentForwarding no\n\
                 X11Forwarding no\n\
                 PrintMotd no\n\
                 LogLevel VERBOSE\n",
                host = host_key.display(),
                keys = authorized_keys.display(),
            ),
        )?;
        // Run as root, sshd needs its privilege-separation directory (which Debian's
        // service unit would create).
        let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self")?);
        if uid == 0 {
            std::fs::create_dir_all("/run/sshd").context("create /run/sshd")?;
        }
        let config_arg = config.display().to_string();
        let child = Child::spawn("sshd", &sshd, &["-D", "-e", "-f", &config_arg], &[])?;
        if !wait_until(Duration::from_secs(20), || {
            child.log().contains("Server listening") || !child.is_running()
        }) || !child.is_running()
        {
            bail!("sshd did not start; log:\n{}", child.log());
        }
        let host_public = std::fs::read_to_string(dir.path().join("ssh_host_ed25519_key.pub"))?;
        let mut fields = host_public.split_whitespace();
        let (Some(kind), Some(key)) = (fields.next(), fields.next()) else {
            bail!("unexpected host key file: {host_public}");
        };
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {kind} {key}\n"))?;
        let user = std::process::Command::new("id")
            .arg("-un")
            .output()
            .context("run id -un")?;
        let user = String::from_utf8_lossy(&user.stdout).trim().to_string();
        if user.is_empty() {
            bail!("cannot tell the current user's name");
        }
        Ok(SshServer {
            child,
            port,
            user,
            identity_file,
            known_hosts,
            dir,
        })
    }

    /// A known_hosts file that holds another host key for this server, as after a
    /// reinstall or a man in the middle.
    pub fn wrong_known_hosts(&self) -> Result<PathBuf> {
        let other = self.dir.path().join("other_host_key");
        keygen(&other, "another-host")?;
        let public = std::fs::read_to_string(self.dir.path().join("other_host_key.pub"))?;
        let mut fields = public.split_whitespace();
        let (Some(kind), Some(key)) = (fields.next(), fields.next()) else {
            bail!("unexpected host key file: {public}");
        };
        let path = self.dir.path().join("known_hosts_wrong");
        std::fs::write(&path, format!("[127.0.0.1]:{} {kind} {key}\n", self.port))?;
        Ok(path)
    }
}

//! TLS and basic auth for the `--web.config.file` tests: a throwaway CA with a server
//! certificate for 127.0.0.1 and a client certificate, made at test time (rcgen), bcrypt
//! hashes, web config files, and curl as the client a person would use.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// bcrypt cost of the tests' hashes: low, because the agent under test is a debug
/// build (the docs advise 10 or more).
pub const TEST_BCRYPT_COST: u32 = 5;

/// A CA, a server certificate (127.0.0.1, ::1, localhost) and a client certificate, as
/// PEM files in a temp dir.
#[derive(Debug)]
pub struct Pki {
    /// The directory holding the files.
    pub dir: tempfile::TempDir,
}

impl Pki {
    /// Makes the CA and both certificates. `client_ca` signs the client certificate
    /// (pass a second `Pki`'s to make one the server does not trust).
    pub fn new() -> Result<Pki> {
        let dir = tempfile::tempdir()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "nodewatch test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        std::fs::write(dir.path().join("ca.crt"), ca.pem())?;

        let leaf = |names: Vec<String>,
                    cn: &str,
                    usage: ExtendedKeyUsagePurpose|
         -> Result<(String, String)> {
            let mut params = CertificateParams::new(names)?;
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate()?;
            let cert = params.signed_by(&key, &ca)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let (cert, key) = leaf(
            vec!["127.0.0.1".into(), "::1".into(), "localhost".into()],
            "nodewatch test server",
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        std::fs::write(dir.path().join("server.crt"), cert)?;
        std::fs::write(dir.path().join("server.key"), key)?;
        let (cert, key) = leaf(
            Vec::new(),
            "prometheus",
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        std::fs::write(dir.path().join("client.crt"), cert)?;
        std::fs::write(dir.path().join("client.key"), key)?;
        Ok(Pki { dir })
    }

    /// A file of the PKI: `ca.crt`, `server.crt`, `server.key`, `client.crt`, `client.key`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `web.yml` (or another name) into the PKI's directory, so its relative
    /// paths (`server.crt`) resolve there, and returns its path.
    pub fn write_web_config(&self, name: &str, yaml: &str) -> Result<PathBuf> {
        let path = self.path(name);
        std::fs::write(&path, yaml).with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    }
}

/// A bcrypt hash of `password` ($2y$, as htpasswd makes them).
pub fn bcrypt_hash(password: &str) -> Result<String> {
    Ok(bcrypt::hash_with_result(password, TEST_BCRYPT_COST)?
        .format_for_version(bcrypt::Version::TwoY))
}

/// What curl got: the HTTP status (0 when no HTTP answer came, e.g. a refused TLS
/// handshake), the body, and curl's exit code and error text.
#[derive(Debug)]
pub struct CurlResult {
    /// HTTP status, 0 without an answer.
    pub status: u16,
    /// The body.
    pub body: String,
    /// The response headers, as received.
    pub headers: String,
    /// curl's exit code (0 on a transfer, 35/56/58 for TLS failures…).
    pub exit_code: i32,
    /// curl's stderr.
    pub stderr: String,
}

/// `curl -s -S <args> URL` with a 10 s limit; returns status and body.
pub fn curl(url: &str, args: &[&str]) -> Result<CurlResult> {
    let output_dir = tempfile::tempdir()?;
    let body_path = output_dir.path().join("body");
    let headers_path = output_dir.path().join("headers");
    let output = Command::new(crate::program("curl", "curl")?)
        .args(["-s", "-S", "--max-time", "10", "--noproxy", "*", "-o"])
        .arg(&body_path)
        .arg("-D")
        .arg(&headers_path)
        .args(["-w", "%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .context("run curl")?;
    let status: u16 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    Ok(CurlResult {
        status,
        body: std::fs::read_to_string(&body_path).unwrap_or_default(),
        headers: std::fs::read_to_string(&headers_path).unwrap_or_default(),
        exit_code: output.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// `--cacert CA` for curl.
pub fn ca_args(pki: &Pki) -> Vec<String> {
    vec!["--cacert".into(), pki.path("ca.crt").display().to_string()]
}

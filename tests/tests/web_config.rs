//! `--web.config.file`: TLS, basic auth and headers in exporter-toolkit's format, for
//! the agent and the exporters, checked with curl and a real Prometheus; bad files stop
//! the start with status 78 and a message naming file and key.

mod common;

use std::time::Duration;

use common::{agent_fixture_args, strs};
use nodewatch_tests::tls::{Pki, bcrypt_hash, ca_args, curl};
use nodewatch_tests::{Agent, Child, Prometheus, agent_binary, fixture, free_port, wait_until};

/// The agent on the fixture tree with `--web.config.file=web_config`.
fn agent_with(web_config: &std::path::Path) -> Agent {
    let mut args = agent_fixture_args(&fixture("pi"), &fixture("textfile"));
    args.push(format!("--web.config.file={}", web_config.display()));
    Agent::start(&strs(&args)).expect("agent")
}

fn https(agent_address: &str, path: &str) -> String {
    format!("https://{agent_address}{path}")
}

fn with(base: &[String], more: &[&str]) -> Vec<String> {
    let mut all = base.to_vec();
    all.extend(more.iter().map(|s| s.to_string()));
    all
}

#[test]
fn tls_with_basic_auth_answers_401_without_the_right_password() {
    let pki = Pki::new().expect("pki");
    let hash = bcrypt_hash("scrape-secret").expect("hash");
    let web = pki
        .write_web_config(
            "web.yml",
            &format!(
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
                 basic_auth_users:\n  prometheus: {hash}\n\
                 http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
            ),
        )
        .expect("web config");
    let agent = agent_with(&web);
    let url = https(&agent.address, "/metrics");
    let ca = ca_args(&pki);

    let ok = curl(&url, &strs(&with(&ca, &["-u", "prometheus:scrape-secret"]))).expect("curl");
    assert_eq!(ok.status, 200, "{ok:?}");
    assert!(ok.body.contains("node_load1 "), "{}", ok.body);
    assert!(
        ok.headers
            .to_ascii_lowercase()
            .contains("x-frame-options: deny"),
        "configured header missing: {}",
        ok.headers
    );

    let wrong = curl(&url, &strs(&with(&ca, &["-u", "prometheus:guess"]))).expect("curl");
    assert_eq!(wrong.status, 401, "{wrong:?}");
    assert!(
        wrong
            .headers
            .to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{}",
        wrong.headers
    );
    assert!(!wrong.body.contains("node_load1"));
    let unknown_user = curl(&url, &strs(&with(&ca, &["-u", "root:scrape-secret"]))).expect("curl");
    assert_eq!(unknown_user.status, 401, "{unknown_user:?}");
    let anonymous = curl(&url, &strs(&ca)).expect("curl");
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    // Health answers are behind the password too.
    let health = curl(&https(&agent.address, "/api/health"), &strs(&ca)).expect("curl");
    assert_eq!(health.status, 401, "{health:?}");

    // Plain HTTP on the TLS port gets no answer, and curl refuses a server it cannot verify.
    let plain = curl(&agent.url("/metrics"), &["-u", "prometheus:scrape-secret"]).expect("curl");
    assert_ne!(plain.status, 200, "{plain:?}");
    let unverified = curl(&url, &["-u", "prometheus:scrape-secret"]).expect("curl");
    assert_eq!(unverified.status, 0, "{unverified:?}");
    // Only TLS 1.2 and 1.3 are offered.
    let old = curl(
        &url,
        &strs(&with(
            &ca,
            &["--tls-max", "1.1", "-u", "prometheus:scrape-secret"],
        )),
    )
    .expect("curl");
    assert_eq!(old.status, 0, "{old:?}");

    // The 401s are counted on /metrics.
    let ok = curl(&url, &strs(&with(&ca, &["-u", "prometheus:scrape-secret"]))).expect("curl");
    assert!(
        ok.body
            .contains("nodewatch_http_requests_total{code=\"401\",handler=\"/metrics\"} 3"),
        "{}",
        ok.body
    );

    // `test-alert` holds no password and speaks plain HTTP: it says so and gives the
    // curl command, and that command works.
    let output = std::process::Command::new(agent_binary())
        .arg(format!("--web.listen-address={}", agent.address))
        .args(["test-alert", "--duration-secs", "2"])
        .output()
        .expect("run test-alert");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "test-alert passed TLS and auth");
    assert!(
        stderr.contains("curl -u USER -X POST 'https://127.0.0.1:"),
        "{stderr}"
    );
    let port = agent.address.rsplit_once(':').expect("port").1;
    let test_alert = curl(
        &format!("https://127.0.0.1:{port}/api/test-alert?severity=critical&duration_secs=2"),
        &strs(&with(
            &ca,
            &["-u", "prometheus:scrape-secret", "-X", "POST"],
        )),
    )
    .expect("curl");
    assert_eq!(test_alert.status, 200, "{test_alert:?}");
    assert!(
        test_alert.body.contains("NodewatchTestAlert"),
        "{test_alert:?}"
    );
}

#[test]
fn client_certificate_required_refuses_clients_without_one() {
    let pki = Pki::new().expect("pki");
    let other_ca = Pki::new().expect("second pki");
    let web = pki
        .write_web_config(
            "web.yml",
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
             client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  \
             min_version: TLS13\n",
        )
        .expect("web config");
    let agent = agent_with(&web);
    let url = https(&agent.address, "/metrics");
    let ca = ca_args(&pki);

    let client = |pki: &Pki| {
        vec![
            "--cert".to_string(),
            pki.path("client.crt").display().to_string(),
            "--key".to_string(),
            pki.path("client.key").display().to_string(),
        ]
    };
    let ok = curl(&url, &strs(&[ca.clone(), client(&pki)].concat())).expect("curl");
    assert_eq!(ok.status, 200, "{ok:?}");
    assert!(ok.body.contains("node_load1 "));

    let without = curl(&url, &strs(&ca)).expect("curl");
    assert_eq!(
        without.status, 0,
        "no client certificate must not get an answer: {without:?}"
    );
    let foreign = curl(&url, &strs(&[ca.clone(), client(&other_ca)].concat())).expect("curl");
    assert_eq!(
        foreign.status, 0,
        "a certificate of another CA must not get an answer: {foreign:?}"
    );
    // min_version TLS13: a TLS 1.2 client is refused.
    let tls12 = curl(
        &url,
        &strs(&[ca, client(&pki), vec!["--tls-max".into(), "1.2".into()]].concat()),
    )
    .expect("curl");
    assert_eq!(tls12.status, 0, "{tls12:?}");
}

#[test]
fn prometheus_scrapes_the_agent_over_tls_with_basic_auth() {
    let pki = Pki::new().expect("pki");
    let hash = bcrypt_hash("scrape-secret").expect("hash");
    let web = pki
        .write_web_config(
            "web.yml",
            &format!(
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
                 basic_auth_users:\n  prometheus: {hash}\n"
            ),
        )
        .expect("web config");
    let agent = agent_with(&web);
    let dir = tempfile::tempdir().expect("tempdir");
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, "scrape-secret").expect("password file");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
             scrape_configs:\n\
             \x20 - job_name: node\n\
             \x20   scheme: https\n\
             \x20   tls_config: {{ ca_file: {ca} }}\n\
             \x20   basic_auth: {{ username: prometheus, password_file: {password} }}\n\
             \x20   static_configs: [ {{ targets: [ \"{target}\" ] }} ]\n\
             \x20 - job_name: wrong-password\n\
             \x20   scheme: https\n\
             \x20   tls_config: {{ ca_file: {ca} }}\n\
             \x20   basic_auth: {{ username: prometheus, password: guess }}\n\
             \x20   static_configs: [ {{ targets: [ \"{target}\" ] }} ]\n",
            ca = pki.path("ca.crt").display(),
            password = password_file.display(),
            target = agent.address,
        ),
    )
    .expect("prometheus.yml");
    let prometheus =
        Prometheus::start_with_config(&config, &dir.path().join("tsdb"), &[]).expect("prometheus");
    let wait = Duration::from_secs(40);
    let up = prometheus
        .wait_for("up{job=\"node\"} == 1", wait)
        .expect("the agent is up over TLS with basic auth");
    assert_eq!(up.len(), 1);
    let load1 = prometheus
        .wait_for("node_load1{job=\"node\"}", wait)
        .expect("node_load1");
    let expected: f64 = std::fs::read_to_string(fixture("pi").join("proc/loadavg"))
        .expect("loadavg")
        .split_whitespace()
        .next()
        .expect("field")
        .parse()
        .expect("number");
    assert_eq!(load1[0].1, expected);
    let refused = prometheus
        .wait_for("up{job=\"wrong-password\"} == 0", wait)
        .expect("the wrong password is refused");
    assert_eq!(refused.len(), 1);
}

#[test]
fn web_config_changes_apply_without_a_restart() {
    let pki = Pki::new().expect("pki");
    let write = |password: &str| {
        let hash = bcrypt_hash(password).expect("hash");
        // Written beside and renamed, as editors and config management do.
        pki.write_web_config(
            "web.yml.new",
            &format!(
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
                 basic_auth_users:\n  prometheus: {hash}\n"
            ),
        )
        .expect("write");
        std::fs::rename(pki.path("web.yml.new"), pki.path("web.yml")).expect("rename");
    };
    write("first");
    let agent = agent_with(&pki.path("web.yml"));
    let url = https(&agent.address, "/api/health");
    let ca = ca_args(&pki);
    let status = |password: &str| {
        curl(
            &url,
            &strs(&with(&ca, &["-u", &format!("prometheus:{password}")])),
        )
        .expect("curl")
        .status
    };
    assert_eq!(status("first"), 200);
    // Make sure the modification time differs even on coarse file systems.
    std::thread::sleep(Duration::from_millis(1100));
    write("second");
    assert_eq!(status("second"), 200, "new password in force");
    assert_eq!(status("first"), 401, "old password refused");

    // A broken edit is logged and the last good file stays in force.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(pki.path("web.yml"), "basic_auth_users: [\n").expect("write");
    assert_eq!(status("second"), 200);
    assert!(
        wait_until(Duration::from_secs(5), || agent
            .child
            .log()
            .contains("Cannot reload the web config")),
        "{}",
        agent.child.log()
    );
}

/// Each bad file: the agent exits 78 at once, and says which file and which key.
#[test]
fn bad_web_config_stops_the_start_naming_file_and_key() {
    let pki = Pki::new().expect("pki");
    let cases: [(&str, &str, &str); 6] = [
        (
            "missing-key.yml",
            "tls_server_config:\n  cert_file: server.crt\n",
            "tls_server_config.key_file",
        ),
        (
            "no-such-cert.yml",
            "tls_server_config:\n  cert_file: nothere.crt\n  key_file: server.key\n",
            "tls_server_config.cert_file",
        ),
        (
            "key-is-a-cert.yml",
            "tls_server_config:\n  cert_file: server.crt\n  key_file: ca.crt\n",
            "tls_server_config.key_file",
        ),
        (
            "plain-password.yml",
            "basic_auth_users:\n  prometheus: hunter2\n",
            "basic_auth_users.prometheus",
        ),
        (
            "auth-type.yml",
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: Sometimes\n",
            "tls_server_config.client_auth_type",
        ),
        (
            "typo.yml",
            "tls_server_confg:\n  cert_file: x\n",
            "tls_server_confg",
        ),
    ];
    for (name, text, key) in cases {
        let path = pki.write_web_config(name, text).expect("write");
        let output = std::process::Command::new(agent_binary())
            .args([
                "--web.listen-address=127.0.0.1:0",
                &format!("--web.config.file={}", path.display()),
            ])
            .output()
            .expect("run agent");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(78), "{name}: {stderr}");
        assert!(
            stderr.contains(&path.display().to_string()),
            "{name}: {stderr}"
        );
        assert!(stderr.contains(key), "{name}: expected {key} in: {stderr}");
    }
    // check-config reads it too.
    let bad = pki.path("plain-password.yml");
    let output = std::process::Command::new(agent_binary())
        .args([
            format!("--web.config.file={}", bad.display()),
            "check-config".into(),
        ])
        .output()
        .expect("run agent");
    assert_eq!(output.status.code(), Some(78));
}

/// The exporters take the same flag: the wallet exporter over TLS with basic auth,
/// and a bad file stops it with 78.
#[test]
fn wallet_exporter_serves_tls_with_basic_auth() {
    let pki = Pki::new().expect("pki");
    let hash = bcrypt_hash("scrape-secret").expect("hash");
    let web = pki
        .write_web_config(
            "web.yml",
            &format!(
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
                 basic_auth_users:\n  prometheus: {hash}\n"
            ),
        )
        .expect("web config");
    let binary = nodewatch_tests::evm::wallet_exporter_binary();
    // An RPC endpoint nobody listens on: the exporter serves its error metrics.
    let rpc = format!("http://127.0.0.1:{}", free_port());
    let env = [
        (
            "WALLET_ADDRESSES",
            "builder-1=0x00000000000000000000000000000000000000a1",
        ),
        ("SCROLL_RPC_URL", rpc.as_str()),
        ("NO_PROXY", "*"),
    ];
    let listen = format!("127.0.0.1:{}", free_port());
    let child = Child::spawn(
        "wallet-exporter",
        &binary,
        &[
            &format!("--web.listen-address={listen}"),
            &format!("--web.config.file={}", web.display()),
        ],
        &env,
    )
    .expect("spawn");
    let url = format!("https://{listen}/metrics");
    let ca = ca_args(&pki);
    let mut last = None;
    let answered = wait_until(Duration::from_secs(20), || {
        let r = curl(&url, &strs(&with(&ca, &["-u", "prometheus:scrape-secret"]))).expect("curl");
        let ok = r.status == 200;
        last = Some(r);
        ok
    });
    assert!(answered, "{last:?}\n{}", child.log());
    let body = last.expect("answer").body;
    assert!(body.contains("# TYPE "), "not an exposition: {body}");
    let wrong = curl(&url, &strs(&with(&ca, &["-u", "prometheus:guess"]))).expect("curl");
    assert_eq!(wrong.status, 401);
    drop(child);

    let bad = pki
        .write_web_config("bad.yml", "basic_auth_users:\n  prometheus: hunter2\n")
        .expect("write");
    let output = std::process::Command::new(&binary)
        .args([
            "--web.listen-address=127.0.0.1:0".to_string(),
            format!("--web.config.file={}", bad.display()),
        ])
        .envs(env)
        .output()
        .expect("run exporter");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("basic_auth_users.prometheus"), "{stderr}");
    assert!(stderr.contains(&bad.display().to_string()), "{stderr}");
}

//! A real EVM JSON-RPC node for the exporters' tests: anvil from npm
//! (`@foundry-rs/anvil`, pinned in `tests/evm/package-lock.json`) with Scroll's chain id,
//! the repo's own contracts (compiled artifacts in `tests/evm/artifacts/`), a counting
//! and fault-injecting JSON-RPC proxy, and the wallet exporter binary.

use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{Child, free_port, get_text, http, read_http_request, wait_until, workspace_root};

/// Scroll mainnet's chain id, which anvil is started with.
pub const SCROLL_CHAIN_ID: u64 = 534_352;
/// Multicall3's canonical address.
pub const MULTICALL3: &str = "0xcA11bde05977b3631167028862bE2a173976CA11";

/// Where the npm packages are installed: `NODEWATCH_NPM_DIR`, or `target/npm`.
pub fn npm_dir() -> PathBuf {
    std::env::var("NODEWATCH_NPM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target/npm"))
}

/// The anvil binary, installed with `npm ci` from the committed lock file on first use
/// (tests/run.sh does it up front).
pub fn anvil_binary() -> Result<PathBuf> {
    static INSTALL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    INSTALL
        .get_or_init(|| install_anvil().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

fn install_anvil() -> Result<PathBuf> {
    let dir = npm_dir();
    let binary = dir.join("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    let lock = workspace_root().join("tests/evm/package-lock.json");
    let installed_lock = dir.join("package-lock.json");
    let current = binary.is_file()
        && std::fs::read(&lock).ok().is_some()
        && std::fs::read(&lock).ok() == std::fs::read(&installed_lock).ok();
    if !current {
        std::fs::create_dir_all(&dir)?;
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(
                workspace_root().join("tests/evm").join(file),
                dir.join(file),
            )?;
        }
        let npm = crate::program("npm", "npm")?;
        let status = std::process::Command::new(npm)
            .current_dir(&dir)
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .status()
            .context("run npm ci")?;
        if !status.success() {
            bail!("npm ci in {} failed", dir.display());
        }
    }
    if !binary.is_file() {
        bail!("{} missing after npm ci", binary.display());
    }
    Ok(binary)
}

/// A compiled contract from `tests/evm/artifacts/`.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// Creation bytecode, `0x…`.
    pub bytecode: String,
    /// Runtime bytecode, `0x…`.
    pub deployed_bytecode: String,
    /// Selector (8 hex digits) by signature.
    pub methods: serde_json::Map<String, Value>,
}

impl Artifact {
    /// Loads `tests/evm/artifacts/<name>.json`.
    pub fn load(name: &str) -> Result<Artifact> {
        let path = workspace_root().join(format!("tests/evm/artifacts/{name}.json"));
        let json: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        Ok(Artifact {
            bytecode: json["bytecode"].as_str().context("bytecode")?.to_string(),
            deployed_bytecode: json["deployedBytecode"]
                .as_str()
                .context("deployedBytecode")?
                .to_string(),
            methods: json["methods"].as_object().context("methods")?.clone(),
        })
    }

    /// `0x` + selector of `signature`.
    pub fn selector(&self, signature: &str) -> Result<String> {
        Ok(format!(
            "0x{}",
            self.methods
                .get(signature)
                .and_then(Value::as_str)
                .with_context(|| format!("no method {signature}"))?
        ))
    }
}

/// A 32-byte ABI word of an unsigned number, as hex without `0x`.
pub fn word(n: u128) -> String {
    format!("{n:064x}")
}

/// A 32-byte ABI word of an address, as hex without `0x`.
pub fn address_word(address: &str) -> String {
    format!("{:0>64}", address.trim_start_matches("0x").to_lowercase())
}

/// A running anvil.
#[derive(Debug)]
pub struct Anvil {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Anvil {
    /// Starts anvil with chain id 534352 on a free loopback port.
    pub fn start() -> Result<Anvil> {
        let binary = anvil_binary()?;
        let port = free_port().to_string();
        let chain = SCROLL_CHAIN_ID.to_string();
        let child = Child::spawn(
            "anvil",
            &binary,
            &[
                "--host",
                "127.0.0.1",
                "--port",
                &port,
                "--chain-id",
                &chain,
                "--silent",
            ],
            &[],
        )?;
        let anvil = Anvil {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        if !wait_until(Duration::from_secs(30), || {
            anvil.rpc("eth_chainId", json!([])).is_ok()
        }) {
            bail!("anvil did not answer; log:\n{}", anvil.child.log());
        }
        Ok(anvil)
    }

    /// One JSON-RPC call; returns its result.
    pub fn rpc(&self, method: &str, params: Value) -> Result<Value> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let mut response = http()
            .post(&self.url)
            .header("content-type", "application/json")
            .send(body.to_string())?;
        let reply: Value = serde_json::from_str(&response.body_mut().read_to_string()?)?;
        if let Some(error) = reply.get("error") {
            bail!("{method}: {error}");
        }
        Ok(reply["result"].clone())
    }

    /// The first unlocked account.
    pub fn account(&self) -> Result<String> {
        Ok(self.rpc("eth_accounts", json!([]))?[0]
            .as_str()
            .context("no account")?
            .to_string())
    }

    /// Sends a transaction from the first account and waits for its receipt; returns
    /// the receipt (`status` checked).
    pub fn send(&self, to: Option<&str>, data: &str) -> Result<Value> {
        let mut tx = json!({"from": self.account()?, "data": data, "gas": "0x2dc6c0"});
        if let Some(to) = to {
            tx["to"] = json!(to);
        }
        let hash = self.rpc("eth_sendTransaction", json!([tx]))?;
        let mut receipt = Value::Null;
        wait_until(Duration::from_secs(10), || {
            receipt = self
                .rpc("eth_getTransactionReceipt", json!([hash]))
                .unwrap_or(Value::Null);
            !receipt.is_null()
        });
        if receipt["status"] != "0x1" {
            bail!("transaction failed: {receipt}");
        }
        Ok(receipt)
    }

    /// Deploys the test ERC-20 (`tests/evm/Token.sol`); returns its address.
    pub fn deploy_token(&self, symbol: &str, decimals: u8) -> Result<String> {
        let token = Artifact::load("Token")?;
        let hex: String = symbol.bytes().map(|b| format!("{b:02x}")).collect();
        // constructor(string, uint8, uint256): offset of the string, decimals, supply, string.
        let data = format!(
            "{}{}{}{}{}{:0<64}",
            token.bytecode,
            word(0x60),
            word(decimals.into()),
            word(0),
            word(symbol.len() as u128),
            hex
        );
        let receipt = self.send(None, &data)?;
        Ok(receipt["contractAddress"]
            .as_str()
            .context("contractAddress")?
            .to_string())
    }

    /// Deploys a contract of `tests/evm/artifacts/` whose constructor takes no
    /// arguments; returns its address.
    pub fn deploy(&self, artifact: &str) -> Result<String> {
        let receipt = self.send(None, &Artifact::load(artifact)?.bytecode)?;
        Ok(receipt["contractAddress"]
            .as_str()
            .context("contractAddress")?
            .to_string())
    }

    /// Sends `signature` with already ABI-encoded `args` (hex words, no `0x`) to
    /// `contract`, a contract of artifact `artifact`.
    pub fn transact(
        &self,
        artifact: &str,
        contract: &str,
        signature: &str,
        args: &str,
    ) -> Result<()> {
        let selector = Artifact::load(artifact)?.selector(signature)?;
        self.send(Some(contract), &format!("{selector}{args}"))?;
        Ok(())
    }

    /// `token.mint(to, amount)` (raw units).
    pub fn mint(&self, token: &str, to: &str, amount: u128) -> Result<()> {
        let selector = Artifact::load("Token")?.selector("mint(address,uint256)")?;
        self.send(
            Some(token),
            &format!("{selector}{}{}", address_word(to), word(amount)),
        )?;
        Ok(())
    }

    /// Sets an account's ETH balance (wei).
    pub fn set_balance(&self, address: &str, wei: u128) -> Result<()> {
        self.rpc("anvil_setBalance", json!([address, format!("0x{wei:x}")]))?;
        Ok(())
    }

    /// Places the repo's Multicall3 at its canonical address.
    pub fn install_multicall3(&self) -> Result<()> {
        let code = Artifact::load("Multicall3")?.deployed_bytecode;
        self.rpc("anvil_setCode", json!([MULTICALL3, code]))?;
        Ok(())
    }
}

/// How the proxy answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwards to the upstream node.
    None,
    /// HTTP 500.
    Status500,
    /// HTTP 200 with a body that is not JSON.
    Garbage,
    /// HTTP 429 with `Retry-After: N`.
    RateLimited(u64),
    /// Forwards after sleeping this many milliseconds.
    Delay(u64),
    /// Answers `eth_chainId` with 1 (Ethereum mainnet); forwards the rest.
    WrongChain,
    /// Forwards `eth_sendRawTransaction` at once but answers it only after this many
    /// milliseconds (a send whose result the client never learns); the rest as `None`.
    DelaySendAnswer(u64),
}

/// One request the proxy saw.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// When it arrived.
    pub at: Instant,
    /// Its JSON body.
    pub body: Value,
    /// The fault it was answered with.
    pub fault: Fault,
}

/// A JSON-RPC proxy between an exporter and anvil: counts requests (one per HTTP
/// request, whatever is inside) and injects faults.
#[derive(Debug)]
pub struct RpcProxy {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    fault: Arc<Mutex<Fault>>,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    stop: Arc<AtomicBool>,
}

impl RpcProxy {
    /// Starts a proxy to `upstream` on a free loopback port.
    pub fn start(upstream: &str) -> Result<RpcProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}", listener.local_addr()?);
        let fault = Arc::new(Mutex::new(Fault::None));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        listener.set_nonblocking(true)?;
        let (f, s, st, up) = (
            fault.clone(),
            seen.clone(),
            stop.clone(),
            upstream.to_string(),
        );
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (f, s, up) = (f.clone(), s.clone(), up.clone());
                        std::thread::spawn(move || {
                            let _ = serve_one(stream, &up, &f, &s);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(RpcProxy {
            url,
            fault,
            seen,
            stop,
        })
    }

    /// Sets how the next requests are answered.
    pub fn set_fault(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for RpcProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads one HTTP/1.1 request, answers it and closes the connection.
fn serve_one(
    stream: TcpStream,
    upstream: &str,
    fault: &Mutex<Fault>,
    seen: &Mutex<Vec<SeenRequest>>,
) -> Result<()> {
    stream.set_nonblocking(false)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let Some(body) = read_http_request(&mut reader)? else {
        return Ok(());
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let fault_now = *fault.lock().unwrap();
    seen.lock().unwrap().push(SeenRequest {
        at: Instant::now(),
        body: body.clone(),
        fault: fault_now,
    });
    let forward = |body: &Value| -> Result<String> {
        let mut response = http()
            .post(upstream)
            .header("content-type", "application/json")
            .send(body.to_string())?;
        Ok(response.body_mut().read_to_string()?)
    };
    let (status, extra, reply) = match fault_now {
        Fault::None => ("200 OK", String::new(), forward(&body)?),
        Fault::Status500 => (
            "500 Internal Server Error",
            String::new(),
            "upstream exploded".into(),
        ),
        Fault::Garbage => ("200 OK", String::new(), "<html>not json".into()),
        Fault::RateLimited(seconds) => (
            "429 Too Many Requests",
            format!("Retry-After: {seconds}\r\n"),
            "{\"error\":\"slow down\"}".into(),
        ),
        Fault::Delay(ms) => {
            std::thread::sleep(Duration::from_millis(ms));
            ("200 OK", String::new(), forward(&body)?)
        }
        Fault::WrongChain if body["method"] == "eth_chainId" => (
            "200 OK",
            String::new(),
            json!({"jsonrpc": "2.0", "id": body["id"], "result": "0x1"}).to_string(),
        ),
        Fault::WrongChain => ("200 OK", String::new(), forward(&body)?),
        Fault::DelaySendAnswer(ms) => {
            let reply = forward(&body)?;
            if body["method"] == "eth_sendRawTransaction" {
                std::thread::sleep(Duration::from_millis(ms));
            }
            ("200 OK", String::new(), reply)
        }
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{reply}",
        reply.len()
    );
    let _ = stream.flush();
    Ok(())
}

/// An exporter binary of `nodewatch-exporters` (`nodewatch-wallet-exporter`,
/// `nodewatch-reward-exporter`), built once per test process with the cargo running the
/// tests. `NODEWATCH_WALLET_EXPORTER_BIN` / `NODEWATCH_REWARD_EXPORTER_BIN` override it.
pub fn exporter_binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let variable = format!(
        "NODEWATCH_{}_BIN",
        name.trim_start_matches("nodewatch-")
            .replace('-', "_")
            .to_uppercase()
    );
    if let Ok(path) = std::env::var(&variable) {
        return PathBuf::from(path);
    }
    let built = BUILT.get_or_init(|| Mutex::new(Vec::new()));
    let mut built = built.lock().unwrap();
    if !built.iter().any(|b| b == name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .current_dir(workspace_root())
            .args([
                "build",
                "--quiet",
                "-p",
                "nodewatch-exporters",
                "--bin",
                name,
            ])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --bin {name} failed");
        built.push(name.to_string());
    }
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target"))
        .join("debug")
        .join(name)
}

/// The wallet exporter binary (see [`exporter_binary`]).
pub fn wallet_exporter_binary() -> PathBuf {
    exporter_binary("nodewatch-wallet-exporter")
}

/// A running exporter (wallet or reward).
#[derive(Debug)]
pub struct WalletExporter {
    /// The process.
    pub child: Child,
    /// `127.0.0.1:PORT`.
    pub address: String,
}

impl WalletExporter {
    /// Starts the exporter with `--config config` (if any), `env`, on a free port.
    pub fn start(config: Option<&Path>, env: &[(&str, &str)]) -> Result<WalletExporter> {
        Self::start_program(&wallet_exporter_binary(), config, env)
    }

    /// Starts any exporter binary of the crate the same way (the reward exporter too).
    pub fn start_program(
        binary: &Path,
        config: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Result<WalletExporter> {
        let mut args = vec!["--web.listen-address=127.0.0.1:0".to_string()];
        if let Some(config) = config {
            args.push(format!("--config={}", config.display()));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // No proxy from the environment: the exporter talks to loopback only here.
        let mut all_env = vec![("NO_PROXY", "*"), ("no_proxy", "*")];
        all_env.extend_from_slice(env);
        let name = binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "exporter".into());
        let child = Child::spawn(&name, binary, &args, &all_env)?;
        let mut address = None;
        wait_until(Duration::from_secs(20), || {
            address = child.log().lines().find_map(|l| {
                let rest = l.split("address=").nth(1)?;
                Some(rest.split_whitespace().next()?.to_string())
            });
            address.is_some() || !child.is_running()
        });
        let Some(address) = address else {
            bail!("{name} did not start; log:\n{}", child.log());
        };
        Ok(WalletExporter { child, address })
    }

    /// `http://ADDRESS{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    /// GET `/metrics`.
    pub fn metrics(&self) -> Result<String> {
        get_text(&self.url("/metrics"))
    }

    /// Polls `/metrics` until `check` holds; returns that body, or fails with the last
    /// body and the log.
    pub fn wait_for(&self, what: &str, mut check: impl FnMut(&str) -> bool) -> Result<String> {
        let mut body = String::new();
        if wait_until(Duration::from_secs(30), || {
            body = self.metrics().unwrap_or_default();
            check(&body)
        }) {
            return Ok(body);
        }
        bail!(
            "timed out waiting for {what}; body:\n{body}\nlog:\n{}",
            self.child.log()
        )
    }
}

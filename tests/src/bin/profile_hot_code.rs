//! `profile-hot-code`: writes `agent/hot-code.txt`, the functions a running agent
//! executes, which `agent/build.rs` lays out together at the front of the agent's code.
//!
//! ```sh
//! cargo run --release -p nodewatch-tests --bin profile-hot-code [-- --secs 90 --out FILE]
//! ```
//!
//! It builds the agent as it ships (profile `dist`) but keeps its symbols, runs it under
//! valgrind's callgrind (every function executed, however briefly: a sampling profiler
//! would miss the ones that run once a minute) twice: on built-in defaults, as a first
//! run on any Linux box; and on a builder node (a private Docker engine running the
//! builder stub, stopped and started, and `test-alert`), both scraped on every endpoint;
//! then turns the names into patterns that hold across
//! targets and builds (see `pattern`). Needs valgrind (Debian's `valgrind`).
//! Regenerate after large changes; docs/benchmarks.md ("Hot-code layout") says why.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use nix::sys::signal::Signal;
use nodewatch_tests::docker::Dockerd;
use nodewatch_tests::{
    Child, DistBuild, build_dist_agent, free_port, get_text, http, program, wait_until,
    workspace_root,
};

const HEADER: &str = "\
# Functions a running agent executes: agent/build.rs links them together at the front of
# its code, so that an agent's resident code is about their size, not the whole binary's.
# One pattern per line: a symbol with `*` for what differs between targets and builds
# (legacy hashes, v0 crate disambiguators and back-references). Made by
#   cargo run --release -p nodewatch-tests --bin profile-hot-code
# (docs/benchmarks.md, \"Hot-code layout\"); a missing name only costs memory, never
# correctness.
";

fn main() -> Result<()> {
    let mut secs = 90u64;
    let mut out = workspace_root().join("agent/hot-code.txt");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args
            .get(i + 1)
            .with_context(|| format!("{} needs a value", args[i]));
        match args[i].as_str() {
            "--secs" => secs = value?.parse().context("--secs: a number of seconds")?,
            "--out" => out = PathBuf::from(value?),
            other => bail!("unknown argument {other} (--secs N, --out FILE)"),
        }
        i += 2;
    }
    let valgrind = program("valgrind", "valgrind")?;
    let binary = build_dist_agent(DistBuild::WithSymbols)?;
    let work = tempfile::tempdir()?;
    eprintln!(
        "profiling the agent on built-in defaults for {} s…",
        secs / 2
    );
    let mut executed = profile_defaults(&valgrind, &binary, work.path(), secs / 2)?;
    eprintln!("profiling the agent on a builder node for {secs} s…");
    executed.extend(profile_builder_node(&valgrind, &binary, work.path(), secs)?);
    let defined = defined_functions(&binary)?;
    let patterns: BTreeSet<String> = executed
        .iter()
        .filter(|name| defined.contains(*name))
        .map(|name| pattern(name))
        .collect();
    ensure!(
        patterns.len() > 100,
        "only {} executed functions of the agent were found: did callgrind see the agent run?",
        patterns.len()
    );
    let mut text = String::from(HEADER);
    for p in &patterns {
        text.push_str(p);
        text.push('\n');
    }
    std::fs::write(&out, text).with_context(|| format!("write {}", out.display()))?;
    eprintln!(
        "{} patterns for {} executed functions written to {}",
        patterns.len(),
        executed.iter().filter(|n| defined.contains(*n)).count(),
        out.display()
    );
    Ok(())
}

/// The agent under callgrind, answering on `base`.
struct Profiled {
    agent: Child,
    profile: PathBuf,
    base: String,
}

impl Profiled {
    /// Starts `binary args…` under callgrind, writing its profile into `work/name.out`,
    /// and waits until it answers `/metrics` on `port`.
    fn start(
        valgrind: &Path,
        binary: &Path,
        work: &Path,
        name: &str,
        args: &[&str],
        port: u16,
    ) -> Result<Profiled> {
        let profile = work.join(format!("{name}.out"));
        let profile_arg = format!("--callgrind-out-file={}", profile.display());
        let binary_arg = binary.display().to_string();
        let mut all = vec![
            "--tool=callgrind",
            "--demangle=no",
            &profile_arg,
            &binary_arg,
        ];
        all.extend_from_slice(args);
        let agent = Child::spawn(name, valgrind, &all, &[])?;
        let base = format!("http://127.0.0.1:{port}");
        let up = wait_until(Duration::from_secs(120), || {
            get_text(&format!("{base}/metrics")).is_ok() || !agent.is_running()
        });
        ensure!(
            up && agent.is_running(),
            "the agent under callgrind ({name}) did not answer; log:\n{}",
            agent.log()
        );
        Ok(Profiled {
            agent,
            profile,
            base,
        })
    }

    /// GETs every page the agent serves, as scrapers and browsers do.
    fn visit_pages(&self) -> Result<()> {
        for path in [
            "/metrics",
            "/",
            "/api/health",
            "/api/health/detailed",
            "/display.png",
        ] {
            fetch(&format!("{}{path}", self.base))
                .with_context(|| format!("agent log:\n{}", self.agent.log()))?;
        }
        Ok(())
    }

    /// SIGTERM (the shutdown path is profiled too), then every function name callgrind
    /// saw run.
    fn stop(mut self) -> Result<BTreeSet<String>> {
        self.agent.signal(Signal::SIGTERM)?;
        ensure!(
            self.agent.wait_timeout(Duration::from_secs(60)).is_some(),
            "the agent under callgrind did not stop on SIGTERM"
        );
        let text = std::fs::read_to_string(&self.profile)
            .with_context(|| format!("callgrind wrote no profile; log:\n{}", self.agent.log()))?;
        Ok(executed_functions(&text))
    }
}

/// The agent as a first run on any Linux box starts it: built-in defaults, no Docker
/// engine, the flag's value as a separate argument; scraped every 3 s for `secs`, long
/// enough for idle threads to time out.
fn profile_defaults(
    valgrind: &Path,
    binary: &Path,
    work: &Path,
    secs: u64,
) -> Result<BTreeSet<String>> {
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let profiled = Profiled::start(
        valgrind,
        binary,
        work,
        "defaults",
        &["--web.listen-address", &address],
        port,
    )?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) {
        profiled.visit_pages()?;
        std::thread::sleep(Duration::from_secs(3));
    }
    profiled.stop()
}

/// The agent on a builder node: a private Docker engine running the builder stub (and
/// stopping and starting it), the builder's health URL and data directory, and
/// `test-alert` through every output.
fn profile_builder_node(
    valgrind: &Path,
    binary: &Path,
    work: &Path,
    secs: u64,
) -> Result<BTreeSet<String>> {
    let dockerd = Dockerd::start()?;
    dockerd.import_builder_stub()?;
    let stub_port = free_port();
    let data = work.join("builder-data");
    std::fs::create_dir_all(&data)?;
    std::fs::write(data.join("state.json"), b"{}")?;
    let config = work.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[docker]\nsocket = \"{}\"\n\n[builder]\nhealth_url = \"http://127.0.0.1:{stub_port}/health-check\"\ndata_dir = \"{}\"\n",
            dockerd.socket().display(),
            data.display()
        ),
    )?;
    let port = free_port();
    let listen = format!("--web.listen-address=127.0.0.1:{port}");
    let config_arg = format!("--config={}", config.display());
    let profiled = Profiled::start(
        valgrind,
        binary,
        work,
        "builder-node",
        &[&config_arg, &listen],
        port,
    )?;
    let started = Instant::now();
    let mut step = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        profiled.visit_pages()?;
        match step {
            1 => {
                dockerd.run_builder_stub(stub_port, "0.1.0-profile", &[])?;
            }
            5 => {
                dockerd.docker(&["stop", "-t", "2", "block-builder"])?;
            }
            6 => {
                dockerd.docker(&["start", "block-builder"])?;
            }
            8 => test_alert(binary, &config_arg, &listen)?,
            _ => {}
        }
        step += 1;
        std::thread::sleep(Duration::from_secs(3));
    }
    profiled.stop()
}

/// GETs `url` and reads the whole body (a page or the display's PNG).
fn fetch(url: &str) -> Result<()> {
    let mut response = http()
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    ensure!(
        response.status().is_success(),
        "GET {url}: {}",
        response.status()
    );
    response.body_mut().read_to_vec()?;
    Ok(())
}

/// `nodewatch-agent test-alert`: the alert path through every output.
fn test_alert(binary: &Path, config_arg: &str, listen: &str) -> Result<()> {
    let output = std::process::Command::new(binary)
        .args([config_arg, listen, "test-alert", "--duration-secs", "3"])
        .output()?;
    ensure!(
        output.status.success(),
        "test-alert failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Every name on a `fn=` or `cfn=` line of a callgrind profile (a callee ran too).
/// Callgrind writes a name once, as `fn=(ID) NAME`, and then `fn=(ID)` alone.
fn executed_functions(profile: &str) -> BTreeSet<String> {
    profile
        .lines()
        .filter_map(|line| {
            let rest = line
                .strip_prefix("fn=(")
                .or_else(|| line.strip_prefix("cfn=("))?;
            let (_, name) = rest.split_once(") ")?;
            Some(name.to_string())
        })
        .collect()
}

/// The function symbols defined in `binary` (`nm --defined-only`).
fn defined_functions(binary: &Path) -> Result<BTreeSet<String>> {
    let nm = program("nm", "binutils")?;
    let output = std::process::Command::new(nm)
        .args(["--defined-only"])
        .arg(binary)
        .output()?;
    ensure!(output.status.success(), "nm {} failed", binary.display());
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, kind, name) = (fields.next()?, fields.next()?, fields.next()?);
            matches!(kind, "t" | "T" | "W" | "w").then(|| name.to_string())
        })
        .collect())
}

/// A symbol as a linker-script glob that matches it on every target: the hash of a
/// legacy symbol (`17h<16 hex>E`), the crate disambiguators (`Cs<base62>_`) and
/// back-references (`B<base62>_`, offsets that move when a disambiguator's length does)
/// of a v0 symbol, and LLVM's `.N`/`.llvm.N` suffixes become `*`. Where a `B…_` run
/// swallows part of a name the glob only gets wider: it still matches the symbol.
fn pattern(symbol: &str) -> String {
    let base = without_llvm_suffixes(symbol);
    let mut glob = if let Some(stem) = base.strip_suffix('E').and_then(legacy_stem) {
        format!("{stem}*")
    } else if base.starts_with("_R") {
        // A crate disambiguator is a 64-bit hash (at most 11 base-62 digits); a
        // back-reference an offset into the symbol (at most 3).
        let glob = wildcard_runs(&wildcard_runs(base, "Cs", 11), "B", 3);
        match without_instantiating_crate(&glob) {
            Some(head) => format!("{head}*"),
            None => glob,
        }
    } else {
        base.to_string()
    };
    if base.len() != symbol.len() && !glob.ends_with('*') {
        glob.push('*');
    }
    glob
}

/// A v0 glob without the crate that instantiated its generic function (the last path
/// of the symbol: a crate root `Cs*_<length><name>` or a back-reference `B*_`). At
/// `opt-level = "z"` crates share generic instances, and which crate's copy a build
/// uses depends on crate hashes, so it differs between builds of the same code.
fn without_instantiating_crate(glob: &str) -> Option<&str> {
    if let Some(head) = glob.strip_suffix("B*_") {
        return Some(head);
    }
    let at = glob.rfind("Cs*_")?;
    let tail = &glob[at + 4..];
    let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
    let length: usize = tail[..digits].parse().ok()?;
    let name = &tail[digits..];
    let name = name.strip_prefix('_').unwrap_or(name);
    (name.len() == length && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .then(|| &glob[..at])
}

/// `symbol` without the `.N`, `.llvm.N` or `.cold` LLVM may append (a legacy symbol's
/// `..` inside generic arguments is part of its name and stays).
fn without_llvm_suffixes(mut symbol: &str) -> &str {
    while let Some((head, tail)) = symbol.rsplit_once('.') {
        let suffix = !tail.is_empty()
            && (tail.bytes().all(|b| b.is_ascii_digit()) || tail == "llvm" || tail == "cold");
        if !suffix || head.is_empty() || head.ends_with('.') {
            break;
        }
        symbol = head;
    }
    symbol
}

/// `_ZN…17h` of a legacy symbol `_ZN…17h<16 hex>` (its closing `E` already removed).
fn legacy_stem(symbol: &str) -> Option<&str> {
    if !symbol.starts_with("_ZN") || symbol.len() < 19 {
        return None;
    }
    let (stem, hash) = symbol.split_at(symbol.len() - 16);
    (stem.ends_with("17h") && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some(stem)
}

/// Replaces each `<tag><base62>_` in `symbol`, the number at most `max_digits` long, by
/// `<tag>*_`.
fn wildcard_runs(symbol: &str, tag: &str, max_digits: usize) -> String {
    let mut out = String::with_capacity(symbol.len());
    let mut rest = symbol;
    while let Some(at) = rest.find(tag) {
        out.push_str(&rest[..at + tag.len()]);
        let after = &rest[at + tag.len()..];
        let digits = after
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric())
            .count();
        if digits <= max_digits && after.as_bytes().get(digits) == Some(&b'_') {
            out.push('*');
            rest = &after[digits..];
        } else {
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_legacy_symbol_loses_its_hash() {
        assert_eq!(
            pattern("_ZN15nodewatch_agent10collectors7meminfo7collect17h0123456789abcdefE"),
            "_ZN15nodewatch_agent10collectors7meminfo7collect17h*"
        );
        assert_eq!(
            pattern("_ZN4core3fmt5write17h0123456789abcdefE.llvm.42"),
            "_ZN4core3fmt5write17h*"
        );
    }

    #[test]
    fn a_v0_symbol_loses_disambiguators_and_back_references() {
        assert_eq!(
            pattern("_RNvMNtCsgEmfK2I1SDS_4core4timeNtB2_8Duration11checked_add"),
            "_RNvMNtCs*_4core4timeNtB*_8Duration11checked_add"
        );
        assert_eq!(
            pattern("_RNvMNtCsgEmfK2I1SDS_4core4timeNtB2_8Duration3new.1486"),
            "_RNvMNtCs*_4core4timeNtB*_8Duration3new*"
        );
    }

    #[test]
    fn a_generic_instance_loses_the_crate_that_instantiated_it() {
        assert_eq!(
            pattern(
                "_RNvMsF_NtCslNYArtu3iFV_5alloc3vecINtB5_3VecNtNtB7_6string6StringE4pushCs1bZvStzTQUi_15nodewatch_agent"
            ),
            "_RNvMsF_NtCs*_5alloc3vecINtB*_3VecNtNtB*_6string6StringE4push*"
        );
        assert_eq!(
            pattern(
                "_RNvXs1_NtCslNYArtu3iFV_5alloc7raw_vecINtB5_6RawVecNtNtNtCs1bZvStzTQUi_15nodewatch_agent6alerts4expr6SampleENtNtNtCsgEmfK2I1SDS_4core3ops4drop4Drop4dropBS_"
            ),
            "_RNvXs1_NtCs*_5alloc7raw_vecINtB*_6RawVecNtNtNtCs*_15nodewatch_agent6alerts4expr6SampleENtNtNtCs*_4core3ops4drop4Drop4drop*"
        );
        // A function of the crate itself keeps its path.
        assert_eq!(
            pattern("_RNvNtCs1bZvStzTQUi_15nodewatch_agent6daemon3run"),
            "_RNvNtCs*_15nodewatch_agent6daemon3run"
        );
    }

    #[test]
    fn a_b_inside_a_v0_identifier_is_no_back_reference() {
        assert_eq!(
            pattern("_RNvMNtCs1a_5alloc5boxedINtB2_3BoxpE3new"),
            "_RNvMNtCs*_5alloc5boxedINtB*_3BoxpE3new"
        );
    }

    #[test]
    fn a_legacy_symbol_keeps_the_dots_of_its_generic_arguments() {
        assert_eq!(
            pattern(
                "_ZN4core3ptr85drop_in_place$LT$alloc..vec..Vec$LT$u8$GT$$GT$17h0123456789abcdefE"
            ),
            "_ZN4core3ptr85drop_in_place$LT$alloc..vec..Vec$LT$u8$GT$$GT$17h*"
        );
    }

    #[test]
    fn a_c_symbol_stays_as_it_is() {
        assert_eq!(
            pattern("ring_x25519_ge_frombytes"),
            "ring_x25519_ge_frombytes"
        );
        assert_eq!(
            pattern("ring_x25519_ge_frombytes.cold"),
            "ring_x25519_ge_frombytes*"
        );
    }
}

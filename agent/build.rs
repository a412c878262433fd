//! Build-time settings of the agent:
//! - the target triple, for `nodewatch_build_info{target}`;
//! - in optimised builds, the hot-code layout: a linker script that puts the functions an
//!   agent runs (listed in `hot-code.txt`, made by `profile-hot-code`) together at the
//!   front of the executable code, so that the few pages it touches are all the kernel
//!   maps. Scattered, they made almost all of `.text` resident (docs/benchmarks.md).
use std::fmt::Write as _;
use std::path::Path;

const HOT_CODE_LIST: &str = "hot-code.txt";
/// `NODEWATCH_HOT_CODE_LAYOUT=0` links without the layout (to measure what it gives).
const LAYOUT_SWITCH: &str = "NODEWATCH_HOT_CODE_LAYOUT";

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=NODEWATCH_BUILD_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={HOT_CODE_LIST}");
    println!("cargo:rerun-if-env-changed={LAYOUT_SWITCH}");

    let optimised = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let elf_linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let switched_off = std::env::var(LAYOUT_SWITCH).is_ok_and(|v| v == "0");
    if !(optimised && elf_linux) || switched_off {
        return;
    }
    let list = match std::fs::read_to_string(HOT_CODE_LIST) {
        Ok(list) => list,
        Err(e) => fail(&format!("cannot read agent/{HOT_CODE_LIST}: {e}")),
    };
    let script = match linker_script(&list) {
        Ok(script) => script,
        Err(e) => fail(&e),
    };
    let out_dir = std::env::var("OUT_DIR").unwrap_or_else(|_| fail("cargo set no OUT_DIR"));
    let script_path = Path::new(&out_dir).join("hot-code.ld");
    if let Err(e) = std::fs::write(&script_path, script) {
        fail(&format!("cannot write {}: {e}", script_path.display()));
    }
    // A script with INSERT adds to the linker's default layout (GNU ld and lld alike).
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script_path.display());
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}

/// One output section, `.text.hot`, before `.text`: every function section whose symbol
/// matches a pattern of the list (a glob: symbol hashes and crate disambiguators differ
/// between targets and builds, so the list has `*` in their place). Functions LLVM
/// deemed cold (`.text.unlikely.`) are taken too when they ran.
fn linker_script(list: &str) -> Result<String, String> {
    let mut script = String::from("SECTIONS\n{\n  .text.hot :\n  {\n");
    let mut patterns = 0;
    for (index, line) in list.lines().enumerate() {
        let pattern = line.trim();
        if pattern.is_empty() || pattern.starts_with('#') {
            continue;
        }
        if let Some(bad) = pattern
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.' | '*')))
        {
            return Err(format!(
                "agent/{HOT_CODE_LIST}, line {}: {bad:?} is not a symbol character (a pattern is a symbol with `*` for its hash)",
                index + 1
            ));
        }
        let _ = writeln!(script, "    *(.text.{pattern} .text.unlikely.{pattern})");
        patterns += 1;
    }
    if patterns == 0 {
        return Err(format!("agent/{HOT_CODE_LIST} lists no function"));
    }
    script.push_str("  }\n}\nINSERT BEFORE .text;\n");
    Ok(script)
}

// Records the target triple for `nodewatch_build_info{target}`.
fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=NODEWATCH_BUILD_TARGET={target}");
}

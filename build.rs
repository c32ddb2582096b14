// Rebuild when a migration is added: `sqlx::migrate!` embeds the folders.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    // Relative relocations packed (DT_RELR): the dynamic loader reads a few
    // KB at start instead of 0.6 MB of `.rela.dyn`, which stayed resident.
    // The linker uses it only where glibc supports it (2.36+), and a linker
    // that does not know the option ignores it with a warning.
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

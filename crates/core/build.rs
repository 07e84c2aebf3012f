//! This crate's tests and examples link with `--wrap=connect`, as the addon does (see
//! `src/sql/nodelay.rs`): their database connections get `TCP_NODELAY` before the TLS handshake.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg=-Wl,--wrap=connect");
    }
}

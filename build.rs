fn main() {
    napi_build::setup();
    // Routes the addon's connect(2) calls through wa-auth-core's `__wrap_connect`, which sets
    // TCP_NODELAY on database connections before sqlx's TLS handshake (see
    // crates/core/src/sql/nodelay.rs).
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-cdylib=-Wl,--wrap=connect");
    }
}

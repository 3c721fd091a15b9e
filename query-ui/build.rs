//! Rebuilds the crate when the web UI's build output changes: the assets in
//! `web/dist` are embedded at compile time (see `src/assets.rs`), and a new
//! `npm run build` writes files under new hashed names.

fn main() {
    // Cargo reruns a build script on every build when a watched path does
    // not exist; before the first `npm run build`, watch `web` instead, in
    // which `dist` will appear.
    if std::path::Path::new("web/dist").exists() {
        println!("cargo::rerun-if-changed=web/dist");
    } else {
        println!("cargo::rerun-if-changed=web");
    }
}

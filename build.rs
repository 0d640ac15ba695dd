//! Rebuilds gantry when a built-in buildpack changes: they are embedded with
//! `include_dir!`, which cargo cannot see reading them.
fn main() {
    println!("cargo:rerun-if-changed=buildpacks");
}

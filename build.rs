//! Build script. The CUDA backend (a later step) compiles `kernels/*.cu` here into one fatbin
//! that the binary embeds; until then the crate is CPU-only and this only tells cargo to
//! rebuild when the kernels folder changes.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
}

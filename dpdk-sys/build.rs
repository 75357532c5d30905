//! Bindings over the system's DPDK (pkg-config `libdpdk`, shared libraries).
//! The same cflags go to bindgen and to the C compiler for `inline.c`, so the
//! struct layouts Rust sees are the ones the wrappers were compiled against.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=inline.h");
    println!("cargo:rerun-if-changed=inline.c");

    let lib = pkg_config::Config::new()
        .atleast_version("22.11")
        .probe("libdpdk")
        .expect("DPDK >= 22.11 not found by pkg-config (install libdpdk-dev: scripts/setup)");

    // pkg-config's cflags carry `-include rte_config.h` and `-march=...`,
    // which the include-path list of the probe result does not.
    let raw = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .expect("pkg-config --cflags libdpdk");
    let cflags_str = String::from_utf8(raw.stdout).expect("utf-8 cflags");
    let flags: Vec<String> = shell_split(&cflags_str);

    let mut build = cc::Build::new();
    build
        .file("inline.c")
        .include(".")
        .opt_level(3)
        .warnings(false);
    for f in &flags {
        build.flag(f);
    }
    build.compile("hdvrf_dpdk_inline");

    let mut b = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_arg("-I.")
        .generate_comments(false)
        .layout_tests(false)
        .derive_default(true)
        .allowlist_function("rte_.*")
        .allowlist_function("hdvrf_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*")
        .allowlist_var("RING_F_.*")
        .opaque_type("rte_l2tpv2_combined_msg_hdr")
        .opaque_type("rte_gtp_psc_generic_hdr")
        .opaque_type("rte_arp_hdr")
        .opaque_type("rte_l2tpv2_msg_hdr")
        .blocklist_function("rte_.*_vlog")
        .blocklist_function("rte_vlog")
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for f in &flags {
        b = b.clang_arg(f);
    }
    for p in &lib.include_paths {
        b = b.clang_arg(format!("-I{}", p.display()));
    }
    let bindings = b.generate().expect("bindgen over DPDK headers");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings");

    // Distribute the version to dependents (DEP_DPDK_VERSION).
    println!("cargo:version={}", lib.version);
}

fn shell_split(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

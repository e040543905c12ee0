//! Compiles the BPF C programs under `bpf/` with clang into `OUT_DIR`.
//!
//! `NODELET_SKIP_BPF_BUILD=1` skips the compile (for `cargo check` on hosts
//! without clang or BTF): an empty object is embedded and loading fails with a
//! clear error at run time.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const CLANG: &str = "clang-19";
const BPFTOOL: &str = "bpftool";
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";
/// Each program with its variants: `<program><suffix>.bpf.o` compiled with `-D<define>`.
/// The pinned variant of sock_lb declares its maps `LIBBPF_PIN_BY_NAME` (see sock_lb.bpf.c);
/// nodeport_lb is not pinned yet.
const PROGRAMS: &[(&str, &[(&str, &str)])] =
    &[("sock_lb", &[("", ""), ("_pinned", "NODELET_PIN_BY_NAME")]), ("nodeport_lb", &[("", "")])];
/// Structs of `bpf/lb.h` whose layout the Rust mirrors are checked against, per object
/// whose BTF has them.
const MIRRORED_STRUCTS: &[(&str, &[&str])] =
    &[("sock_lb.bpf.o", SOCK_LB_STRUCTS), ("nodeport_lb.bpf.o", NODEPORT_STRUCTS)];
const SOCK_LB_STRUCTS: &[&str] = &[
    "lb4_key",
    "lb4_value",
    "lb4_reverse_key",
    "lb4_reverse_value",
    "lb4_affinity_key",
    "lb4_affinity_value",
    "lb6_key",
    "lb6_value",
    "lb6_reverse_key",
    "lb6_reverse_value",
    "lb6_affinity_key",
    "lb6_affinity_value",
];
const NODEPORT_STRUCTS: &[&str] = &["np4_key", "np4_backend", "np4_service", "np4_range", "np4_ct_key", "np4_ct_value"];
/// Macros of `bpf/lb.h` the Rust side needs (macros are not in BTF), with their Rust type.
const MIRRORED_DEFINES: &[(&str, &str)] = &[
    ("LB_MAX_BACKENDS", "usize"),
    ("LB_FLAG_AFFINITY", "u16"),
    ("LB_KIND_SHIFT", "u16"),
    ("LB_KIND_MASK", "u16"),
    ("LB_MAGLEV_SIZE", "usize"),
    ("NP_FLAG_SOURCE_RANGES", "u16"),
    ("NP_BACKEND_REMOTE", "u16"),
    ("NP_CT_SNAT", "u16"),
    ("NP_SNAT_PORT_MIN", "u16"),
    ("NP_SNAT_PORT_MAX", "u16"),
    ("NP_CT_FORWARD", "u8"),
    ("NP_CT_REPLY", "u8"),
];
/// The layout of `bpf/lb.h` when the C is not compiled (skip mode only).
const SKIPPED_BUILD_LAYOUT: &str = "\
pub(crate) const LB_MAX_BACKENDS: usize = 1024;
pub(crate) const LB_FLAG_AFFINITY: u16 = 0x1;
pub(crate) const LB_KIND_SHIFT: u16 = 8;
pub(crate) const LB_KIND_MASK: u16 = 0x700;
pub(crate) const LB_MAGLEV_SIZE: usize = 16381;
pub(crate) const NP_FLAG_SOURCE_RANGES: u16 = 0x1;
pub(crate) const NP_BACKEND_REMOTE: u16 = 0x1;
pub(crate) const NP_CT_SNAT: u16 = 0x1;
pub(crate) const NP_SNAT_PORT_MIN: u16 = 61000;
pub(crate) const NP_SNAT_PORT_MAX: u16 = 65535;
pub(crate) const NP_CT_FORWARD: u8 = 0;
pub(crate) const NP_CT_REPLY: u8 = 1;
pub(crate) mod lb4_key { pub const SIZE: usize = 12; pub const ADDRESS: usize = 0; pub const DPORT: usize = 4; pub const PROTO: usize = 6; pub const PAD: usize = 7; pub const SLOT: usize = 8; pub const REV: usize = 10; }
pub(crate) mod lb4_value { pub const SIZE: usize = 16; pub const ADDRESS: usize = 0; pub const PORT: usize = 4; pub const COUNT: usize = 6; pub const REV: usize = 8; pub const FLAGS: usize = 10; pub const AFFINITY_TIMEOUT: usize = 12; }
pub(crate) mod lb4_reverse_key { pub const SIZE: usize = 16; pub const COOKIE: usize = 0; pub const ADDRESS: usize = 8; pub const PORT: usize = 12; pub const PAD: usize = 14; }
pub(crate) mod lb4_reverse_value { pub const SIZE: usize = 8; pub const ADDRESS: usize = 0; pub const PORT: usize = 4; pub const PAD: usize = 6; }
pub(crate) mod lb4_affinity_key { pub const SIZE: usize = 16; pub const CLIENT: usize = 0; pub const ADDRESS: usize = 8; pub const DPORT: usize = 12; pub const PROTO: usize = 14; pub const PAD: usize = 15; }
pub(crate) mod lb4_affinity_value { pub const SIZE: usize = 24; pub const LAST_USED: usize = 0; pub const ADDRESS: usize = 8; pub const PORT: usize = 12; pub const REV: usize = 14; pub const SLOT: usize = 16; pub const PAD: usize = 18; }
pub(crate) mod lb6_key { pub const SIZE: usize = 24; pub const ADDRESS: usize = 0; pub const DPORT: usize = 16; pub const PROTO: usize = 18; pub const PAD: usize = 19; pub const SLOT: usize = 20; pub const REV: usize = 22; }
pub(crate) mod lb6_value { pub const SIZE: usize = 28; pub const ADDRESS: usize = 0; pub const PORT: usize = 16; pub const COUNT: usize = 18; pub const REV: usize = 20; pub const FLAGS: usize = 22; pub const AFFINITY_TIMEOUT: usize = 24; }
pub(crate) mod lb6_reverse_key { pub const SIZE: usize = 32; pub const COOKIE: usize = 0; pub const ADDRESS: usize = 8; pub const PORT: usize = 24; pub const PAD: usize = 26; }
pub(crate) mod lb6_reverse_value { pub const SIZE: usize = 20; pub const ADDRESS: usize = 0; pub const PORT: usize = 16; pub const PAD: usize = 18; }
pub(crate) mod lb6_affinity_key { pub const SIZE: usize = 32; pub const CLIENT: usize = 0; pub const ADDRESS: usize = 8; pub const DPORT: usize = 24; pub const PROTO: usize = 26; pub const PAD: usize = 27; }
pub(crate) mod lb6_affinity_value { pub const SIZE: usize = 32; pub const LAST_USED: usize = 0; pub const ADDRESS: usize = 8; pub const PORT: usize = 24; pub const REV: usize = 26; pub const SLOT: usize = 28; pub const PAD: usize = 30; }
pub(crate) mod np4_key { pub const SIZE: usize = 8; pub const ADDRESS: usize = 0; pub const DPORT: usize = 4; pub const PROTO: usize = 6; pub const PAD: usize = 7; }
pub(crate) mod np4_backend { pub const SIZE: usize = 8; pub const ADDRESS: usize = 0; pub const PORT: usize = 4; pub const FLAGS: usize = 6; }
pub(crate) mod np4_service { pub const SIZE: usize = 40964; pub const COUNT: usize = 0; pub const FLAGS: usize = 2; pub const PAD: usize = 4; pub const BACKENDS: usize = 8; pub const MAGLEV: usize = 8200; pub const PAD2: usize = 40962; }
pub(crate) mod np4_range { pub const SIZE: usize = 12; pub const FRONTEND: usize = 0; pub const SOURCE: usize = 8; }
pub(crate) mod np4_ct_key { pub const SIZE: usize = 16; pub const SADDR: usize = 0; pub const DADDR: usize = 4; pub const SPORT: usize = 8; pub const DPORT: usize = 10; pub const PROTO: usize = 12; pub const DIR: usize = 13; pub const PAD: usize = 14; }
pub(crate) mod np4_ct_value { pub const SIZE: usize = 16; pub const ADDRESS: usize = 0; pub const PORT: usize = 4; pub const FLAGS: usize = 6; pub const NAT_ADDRESS: usize = 8; pub const NAT_PORT: usize = 12; pub const PAD: usize = 14; }
";
const PACKAGES_HINT: &str = "install the Debian packages clang-19, llvm-19, libbpf-dev and bpftool \
     (or set NODELET_SKIP_BPF_BUILD=1 to build without the BPF programs)";

fn main() {
    println!("cargo:rerun-if-env-changed=NODELET_SKIP_BPF_BUILD");
    println!("cargo:rerun-if-changed=bpf");
    for entry in fs::read_dir("bpf").expect("read ebpf/bpf").flatten() {
        println!("cargo:rerun-if-changed={}", entry.path().display());
    }

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let skip = env::var("NODELET_SKIP_BPF_BUILD").is_ok_and(|v| v == "1");
    let layout_rs = out_dir.join("c_layout.rs");
    if skip {
        for (program, (suffix, _)) in PROGRAMS.iter().flat_map(|(p, variants)| variants.iter().map(move |v| (p, v))) {
            let object = out_dir.join(format!("{program}{suffix}.bpf.o"));
            fs::write(&object, []).expect("write empty BPF object");
            println!("cargo:warning=NODELET_SKIP_BPF_BUILD=1: {program} not built, loading it will fail");
        }
        fs::write(&layout_rs, SKIPPED_BUILD_LAYOUT).expect("write c_layout.rs");
        return;
    }
    let vmlinux_h = generate_vmlinux_h(&out_dir);
    for (program, variants) in PROGRAMS {
        for (suffix, define) in *variants {
            compile(program, define, &vmlinux_h, &out_dir.join(format!("{program}{suffix}.bpf.o")));
        }
    }
    let layout = c_layout_from_btf(&out_dir);
    fs::write(&layout_rs, layout).expect("write c_layout.rs");
}

/// Rust constants (size, field offsets in bytes) of the structs in
/// `MIRRORED_STRUCTS`, read from the BTF clang wrote into the objects: the
/// layout the C compiler actually used, for the const assertions in
/// `src/layout/` and `src/nodeport/layout.rs`.
fn c_layout_from_btf(out_dir: &Path) -> String {
    let mut generated =
        String::from("// Generated by build.rs from bpf/lb.h and the BTF of the compiled BPF objects.\n");
    let header = fs::read_to_string("bpf/lb.h").expect("read bpf/lb.h");
    for (name, rust_type) in MIRRORED_DEFINES {
        generated.push_str(&define_const(&header, name, rust_type));
    }
    for (object, structs) in MIRRORED_STRUCTS {
        let raw = btf_raw(&out_dir.join(object));
        for name in *structs {
            generated.push_str(&struct_layout(&raw, name));
        }
    }
    generated
}

/// `bpftool btf dump file <object> format raw`.
fn btf_raw(object: &Path) -> String {
    let output = Command::new(BPFTOOL)
        .args(["btf", "dump", "file"])
        .arg(object)
        .args(["format", "raw"])
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot run {BPFTOOL}: {e}")));
    if !output.status.success() {
        fail(&format!(
            "{BPFTOOL} btf dump of {} failed: {}",
            object.display(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A `#define NAME <number>` of `bpf/lb.h` (decimal or 0x hex) as a Rust constant.
fn define_const(header: &str, name: &str, rust_type: &str) -> String {
    let prefix = format!("#define {name} ");
    let value = header
        .lines()
        .find_map(|line| line.trim().strip_prefix(&prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| match number.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => number.parse::<u64>().ok(),
        })
        .unwrap_or_else(|| fail(&format!("bpf/lb.h must #define {name} as a number")));
    format!("pub(crate) const {name}: {rust_type} = {value};\n")
}

/// One `pub(crate) mod <struct> { SIZE, <FIELD>... }` from `bpftool btf dump
/// format raw` lines like `[6] STRUCT 'lb4_key' size=12 vlen=6` followed by
/// `\t'address' type_id=7 bits_offset=0`.
fn struct_layout(raw: &str, name: &str) -> String {
    let header = format!("STRUCT '{name}' size=");
    let mut lines = raw.lines();
    let size = lines
        .by_ref()
        .find_map(|line| line.split_once(&header).map(|(_, rest)| rest.to_owned()))
        .and_then(|rest| rest.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| fail(&format!("struct {name} not found in the BTF of the BPF object")));
    let mut module = format!("pub(crate) mod {name} {{\n    pub const SIZE: usize = {size};\n");
    for line in lines.take_while(|line| line.starts_with('\t')) {
        let mut parts = line.split_whitespace();
        let field = parts.next().unwrap_or_default().trim_matches('\'');
        let bits = parts
            .find_map(|p| p.strip_prefix("bits_offset="))
            .and_then(|b| b.parse::<usize>().ok())
            .unwrap_or_else(|| fail(&format!("no bits_offset for {name}.{field} in BTF")));
        module.push_str(&format!("    pub const {}: usize = {};\n", field.to_uppercase(), bits / 8));
    }
    module.push_str("}\n");
    module
}

/// `vmlinux.h` from the running kernel's BTF, so the C sees the kernel's types.
fn generate_vmlinux_h(out_dir: &Path) -> PathBuf {
    let header = out_dir.join("vmlinux.h");
    if !Path::new(KERNEL_BTF).exists() {
        fail(&format!("{KERNEL_BTF} not found: the kernel must be built with CONFIG_DEBUG_INFO_BTF"));
    }
    let output = Command::new(BPFTOOL)
        .args(["btf", "dump", "file", KERNEL_BTF, "format", "c"])
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot run {BPFTOOL}: {e}")));
    if !output.status.success() {
        fail(&format!("{BPFTOOL} btf dump failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    fs::write(&header, output.stdout).expect("write vmlinux.h");
    header
}

fn compile(program: &str, define: &str, vmlinux_h: &Path, object: &Path) {
    let source = format!("bpf/{program}.bpf.c");
    let include_generated = vmlinux_h.parent().expect("vmlinux.h has a parent dir");
    let mut clang = Command::new(CLANG);
    if !define.is_empty() {
        clang.arg(format!("-D{define}"));
    }
    let output = clang
        .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
        .arg(format!("-D__TARGET_ARCH_{}", bpf_target_arch()))
        .arg("-I")
        .arg(include_generated)
        .args(["-I", "bpf", "-I"])
        .arg(format!("/usr/include/{}-linux-gnu", target_arch()))
        .args(["-c", &source, "-o"])
        .arg(object)
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot run {CLANG}: {e}")));
    if !output.status.success() {
        fail(&format!("{CLANG} failed on {source}:\n{}", String::from_utf8_lossy(&output.stderr)));
    }
}

fn target_arch() -> String {
    env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".to_owned())
}

/// libbpf's name of the architecture (for `bpf_tracing.h` style macros).
fn bpf_target_arch() -> &'static str {
    match target_arch().as_str() {
        "aarch64" => "arm64",
        "riscv64" => "riscv",
        "powerpc64" => "powerpc",
        "s390x" => "s390",
        _ => "x86",
    }
}

fn fail(message: &str) -> ! {
    panic!("nodelet-ebpf build: {message}; {PACKAGES_HINT}");
}

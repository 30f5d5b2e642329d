//! The ABI in `pop-common` against the compiled object's BTF.
//!
//! `bpftool -j btf dump file` of `pop_ebpf::pop_object()` gives every struct the
//! C side uses with its size and member offsets (in bits). Each entry of
//! `pop_common::layouts()` must match its struct member for member, and each
//! `pop_common::constants()` value its enum value: from BTF when clang emitted
//! the enum, else from the `NAME = value` lines of `pop-ebpf/src/abi.h` (enums
//! only used as values leave no BTF). The `#define`s that size maps and flag
//! bits are checked against `abi.h` too.
//!
//! `check_drift_is_detected` runs the same checks on deliberately broken
//! copies, so a check that can no longer fail fails the test.
use std::collections::BTreeMap;

use serde_json::Value;

/// A struct as BTF describes it.
#[derive(Clone, Debug, PartialEq)]
struct BtfStruct {
    size: u64,
    /// (name, offset in bits), in declaration order.
    members: Vec<(String, u64)>,
}

/// What the checks need from the BTF dump.
#[derive(Clone, Debug, Default)]
struct Btf {
    structs: BTreeMap<String, BtfStruct>,
    enum_values: BTreeMap<String, i64>,
}

fn parse_btf(json: &Value) -> Result<Btf, String> {
    let types = json["types"]
        .as_array()
        .ok_or("bpftool JSON has no \"types\" array")?;
    let mut btf = Btf::default();
    for t in types {
        let kind = t["kind"].as_str().unwrap_or_default();
        let name = t["name"].as_str().unwrap_or_default();
        match kind {
            "STRUCT" if !name.is_empty() => {
                let members = t["members"]
                    .as_array()
                    .ok_or_else(|| format!("struct {name}: no members array"))?
                    .iter()
                    .map(|m| {
                        let field = m["name"].as_str().unwrap_or_default().to_string();
                        let bits = m["bits_offset"]
                            .as_u64()
                            .ok_or_else(|| format!("struct {name}.{field}: no bits_offset"))?;
                        Ok((field, bits))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                let size = t["size"]
                    .as_u64()
                    .ok_or_else(|| format!("struct {name}: no size"))?;
                btf.structs
                    .insert(name.to_string(), BtfStruct { size, members });
            }
            "ENUM" | "ENUM64" => {
                for v in t["values"].as_array().into_iter().flatten() {
                    let n = v["name"].as_str().unwrap_or_default().to_string();
                    let val = v["val"]
                        .as_i64()
                        .ok_or_else(|| format!("enum value {n}: no integer val"))?;
                    btf.enum_values.insert(n, val);
                }
            }
            _ => {}
        }
    }
    Ok(btf)
}

/// `NAME = value,` lines inside `enum ... { }` blocks of abi.h.
fn parse_header_enums(header: &str) -> Result<BTreeMap<String, i64>, String> {
    let mut values = BTreeMap::new();
    let mut in_enum = false;
    for (n, line) in header.lines().enumerate() {
        let line = line.split("/*").next().unwrap_or_default().trim();
        if line.starts_with("enum ") && line.ends_with('{') {
            in_enum = true;
        } else if in_enum && line.starts_with('}') {
            in_enum = false;
        } else if in_enum && !line.is_empty() {
            let (name, value) = line
                .trim_end_matches(',')
                .split_once('=')
                .ok_or_else(|| format!("abi.h line {}: enum entry without = value", n + 1))?;
            let value = parse_c_int(value.trim(), &BTreeMap::new())
                .ok_or_else(|| format!("abi.h line {}: bad value {value:?}", n + 1))?;
            values.insert(name.trim().to_string(), value);
        }
    }
    Ok(values)
}

/// `#define NAME value` lines of abi.h, for plain and shifted integers and
/// products of earlier defines. The include guard (no value) is left out;
/// a define whose value cannot be read maps to `None`, so that the check
/// still sees it.
fn parse_header_defines(header: &str) -> BTreeMap<String, Option<i64>> {
    let mut values = BTreeMap::new();
    for line in header.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("#define") {
            continue;
        }
        let (Some(name), rest) = (words.next(), words.collect::<Vec<_>>().join(" ")) else {
            continue;
        };
        let rest = rest.split("/*").next().unwrap_or_default().trim();
        if rest.is_empty() {
            continue;
        }
        let known: BTreeMap<String, i64> = values
            .iter()
            .filter_map(|(k, v): (&String, &Option<i64>)| Some((k.clone(), (*v)?)))
            .collect();
        values.insert(name.to_string(), parse_c_int(rest, &known));
    }
    values
}

/// `42`, `0x10`, `4096U`, `(1U << 3)`, `(POP_MAX_CUSTOMERS * 2)`.
fn parse_c_int(text: &str, known: &BTreeMap<String, i64>) -> Option<i64> {
    let t = text
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .trim();
    if let Some((a, b)) = t.split_once("<<") {
        return Some(parse_c_int(a, known)? << parse_c_int(b, known)?);
    }
    if let Some((a, b)) = t.split_once('*') {
        return Some(parse_c_int(a, known)? * parse_c_int(b, known)?);
    }
    if let Some(v) = known.get(t) {
        return Some(*v);
    }
    let t = t.trim_end_matches(['U', 'u', 'L', 'l']);
    match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => i64::from_str_radix(hex, 16).ok(),
        None => t.parse().ok(),
    }
}

type Layout = (&'static str, usize, &'static [(&'static str, usize)]);

/// Every difference between the Rust layouts and the BTF structs.
fn layout_errors(btf: &Btf, layouts: &[Layout]) -> Vec<String> {
    let mut errors = vec![];
    for (name, size, fields) in layouts {
        let Some(s) = btf.structs.get(*name) else {
            errors.push(format!("struct {name}: not in the object's BTF"));
            continue;
        };
        if s.size != *size as u64 {
            errors.push(format!(
                "struct {name}: size {} bytes in BTF, {size} in pop-common",
                s.size
            ));
        }
        let rust: Vec<(String, u64)> = fields
            .iter()
            .map(|(f, off)| (f.to_string(), *off as u64 * 8))
            .collect();
        for (field, bits) in &rust {
            match s.members.iter().find(|(m, _)| m == field) {
                None => errors.push(format!("struct {name}.{field}: not in BTF")),
                Some((_, b)) if b != bits => errors.push(format!(
                    "struct {name}.{field}: offset {} bytes in BTF, {} in pop-common",
                    b / 8,
                    bits / 8
                )),
                Some(_) => {}
            }
        }
        for (member, _) in &s.members {
            if !rust.iter().any(|(f, _)| f == member) {
                errors.push(format!(
                    "struct {name}.{member}: in BTF but not in pop-common"
                ));
            }
        }
    }
    errors
}

/// Every difference between the Rust constants and BTF enums or abi.h.
/// Returns the errors and how many constants were checked against BTF.
fn constant_errors(
    btf: &Btf,
    header_enums: &BTreeMap<String, i64>,
    constants: &[(&str, i64)],
) -> (Vec<String>, usize) {
    let mut errors = vec![];
    let mut from_btf = 0;
    for (name, value) in constants {
        let (c_value, source) = match btf.enum_values.get(*name) {
            Some(v) => {
                from_btf += 1;
                (Some(*v), "BTF")
            }
            None => (header_enums.get(*name).copied(), "abi.h"),
        };
        match c_value {
            None => errors.push(format!(
                "constant {name}: in pop-common, not in BTF nor abi.h"
            )),
            Some(c) if c != *value => errors.push(format!(
                "constant {name}: {c} in {source}, {value} in pop-common"
            )),
            Some(_) => {}
        }
    }
    for name in header_enums.keys() {
        if !constants.iter().any(|(n, _)| n == name) {
            errors.push(format!(
                "constant {name}: in abi.h, missing from pop_common::constants()"
            ));
        }
    }
    (errors, from_btf)
}

/// The `#define`s of abi.h that pop-common mirrors as consts.
/// Every `#define POP_*` of abi.h must be one of these, with this value: a
/// define added to abi.h without its pop-common mirror is drift too.
fn define_errors(defines: &BTreeMap<String, Option<i64>>) -> Vec<String> {
    use pop_common::*;
    let expected: &[(&str, i64)] = &[
        ("POP_MAX_IFACES", MAX_IFACES.into()),
        ("POP_NO_IFACE_SLOT", NO_IFACE_SLOT.into()),
        ("POP_MAX_ECMP", MAX_ECMP as i64),
        ("POP_MAX_NEXTHOPS", MAX_NEXTHOPS.into()),
        ("POP_MAX_CUSTOMERS", MAX_CUSTOMERS.into()),
        ("POP_MAX_ROUTES_V4", MAX_ROUTES_V4.into()),
        ("POP_MAX_ROUTES_V6", MAX_ROUTES_V6.into()),
        ("POP_MAX_CUSTOMER_PREFIXES", MAX_CUSTOMER_PREFIXES.into()),
        ("POP_MAX_LOCAL_ADDRS", MAX_LOCAL_ADDRS.into()),
        ("POP_MAX_UPPER_MACS", MAX_UPPER_MACS.into()),
        ("POP_CFG_NO_ROUTE_DROP", CFG_NO_ROUTE_DROP.into()),
        ("POP_NH_VALID", NH_VALID.into()),
        ("POP_NH_RESOLVED", NH_RESOLVED.into()),
        ("POP_ROUTE_BLACKHOLE", ROUTE_BLACKHOLE.into()),
        ("POP_MAX_ACL_RULES", MAX_ACL_RULES.into()),
        ("POP_MAX_ACL_NODES", MAX_ACL_NODES.into()),
        ("POP_MAX_ACL_LEAF_BLOCKS", MAX_ACL_LEAF_BLOCKS.into()),
        ("POP_ACL_REF_LEAF", ACL_REF_LEAF.into()),
        ("POP_ACL_REF_START", ACL_REF_START.into()),
        ("POP_ACL_REF_COUNT_SHIFT", ACL_REF_COUNT_SHIFT.into()),
        ("POP_ACL_REF_COUNT", ACL_REF_COUNT.into()),
        ("POP_ACL_NO_RULE", ACL_NO_RULE.into()),
        ("POP_MAX_POLICERS", MAX_POLICERS.into()),
        ("POP_MAX_SPOOF_PREFIXES", MAX_SPOOF_PREFIXES.into()),
        ("POP_IFACE_ANTI_SPOOFING", IFACE_ANTI_SPOOFING.into()),
        ("POP_IPV6_EXT_MAX", IPV6_EXT_MAX.into()),
        ("POP_SAMPLE_HEADER_BYTES", SAMPLE_HEADER_BYTES as i64),
        ("POP_CAPTURE_BYTES", CAPTURE_BYTES as i64),
        ("POP_SAMPLE_RING_BYTES", SAMPLE_RING_BYTES.into()),
        ("POP_CAPTURE_RING_BYTES", CAPTURE_RING_BYTES.into()),
        ("POP_CAPTURE_ON", CAPTURE_ON.into()),
        ("POP_CAPTURE_IFACE", CAPTURE_IFACE.into()),
        ("POP_CAPTURE_CUSTOMER", CAPTURE_CUSTOMER.into()),
        ("POP_CAPTURE_DROPS", CAPTURE_DROPS.into()),
        ("POP_CAPTURE_DROP_REASON", CAPTURE_DROP_REASON.into()),
        ("POP_PENDING_SAMPLE", PENDING_SAMPLE.into()),
        ("POP_PENDING_CAPTURE", PENDING_CAPTURE.into()),
        ("POP_MAX_ROUTE_RECORDS_V4", MAX_ROUTE_RECORDS_V4.into()),
        ("POP_IFACES_BY_INDEX", IFACES_BY_INDEX.into()),
        ("POP_IFACE_PRESENT", IFACE_PRESENT.into()),
    ];
    let mut errors = vec![];
    for (name, value) in expected {
        match defines.get(*name) {
            None => errors.push(format!("#define {name}: not in abi.h")),
            Some(None) => errors.push(format!("#define {name}: value not readable in abi.h")),
            Some(Some(c)) if c != value => errors.push(format!(
                "#define {name}: {c} in abi.h, {value} in pop-common"
            )),
            Some(_) => {}
        }
    }
    for name in defines.keys() {
        if name.starts_with("POP_") && !expected.iter().any(|(n, _)| n == name) {
            errors.push(format!(
                "#define {name}: in abi.h but not mirrored and checked (pop-common and this test)"
            ));
        }
    }
    errors
}

/// The maps the object defines: the variables of its `.maps` section.
fn object_map_names(json: &Value) -> Vec<String> {
    let types = json["types"].as_array().expect("types");
    let by_id = |id: u64| types.iter().find(|t| t["id"].as_u64() == Some(id));
    let mut names: Vec<String> = types
        .iter()
        .filter(|t| t["kind"] == "DATASEC" && t["name"] == ".maps")
        .flat_map(|t| t["vars"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| by_id(v["type_id"].as_u64()?))
        .filter_map(|var| var["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// Every map of the object must be in `pop_common::maps::ALL` (popd pins,
/// adopts and carries them over by those names) and the other way round.
fn map_name_errors(object: &[String], listed: &[&str]) -> Vec<String> {
    let mut errors = vec![];
    for m in object {
        if !listed.contains(&m.as_str()) {
            errors.push(format!(
                "map {m}: in the object, not in pop_common::maps::ALL"
            ));
        }
    }
    for m in listed {
        if !object.iter().any(|o| o == m) {
            errors.push(format!(
                "map {m}: in pop_common::maps::ALL, not in the object"
            ));
        }
    }
    errors
}

fn btf_json_of(object: &[u8]) -> Value {
    let mut file = tempfile::Builder::new()
        .prefix("pt-abi-")
        .suffix(".bpf.o")
        .tempfile()
        .expect("creating a temp file");
    std::io::Write::write_all(&mut file, object).expect("writing the object");
    let out = std::process::Command::new("bpftool")
        .args(["-j", "btf", "dump", "file"])
        .arg(file.path())
        .output()
        .unwrap_or_else(|e| panic!("running bpftool (apt-get install -y bpftool): {e}"));
    assert!(
        out.status.success(),
        "bpftool btf dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("bpftool printed invalid JSON")
}

/// abi.h of the tree, or the file named by `POP_ABI_HEADER` (to check a copy).
fn abi_header() -> String {
    let path = std::env::var("POP_ABI_HEADER").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../pop-ebpf/src/abi.h").to_string()
    });
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The built object, or the ELF file named by `POP_TESTRUN_OBJECT` (to check
/// another build, e.g. one compiled from a deliberately broken copy).
fn object_btf() -> Btf {
    let json = match std::env::var_os("POP_TESTRUN_OBJECT") {
        None => btf_json_of(pop_ebpf::pop_object()),
        Some(path) => btf_json_of(
            &std::fs::read(&path).unwrap_or_else(|e| panic!("POP_TESTRUN_OBJECT {path:?}: {e}")),
        ),
    };
    parse_btf(&json).expect("parsing the BTF dump")
}

#[test]
fn struct_layouts_match_btf() {
    let btf = object_btf();
    let layouts = pop_common::layouts();
    assert!(layouts.len() >= 9, "pop_common::layouts() lost entries");
    let errors = layout_errors(&btf, layouts);
    assert!(errors.is_empty(), "ABI drift:\n  {}", errors.join("\n  "));
}

#[test]
fn constants_match_btf_or_abi_h() {
    let btf = object_btf();
    let header_enums = parse_header_enums(&abi_header()).expect("parsing abi.h");
    assert!(
        header_enums.len() >= 20,
        "abi.h parse found only {} enum entries",
        header_enums.len()
    );
    let (errors, from_btf) = constant_errors(&btf, &header_enums, pop_common::constants());
    eprintln!(
        "{} constants: {from_btf} checked against BTF, the rest against abi.h",
        pop_common::constants().len()
    );
    assert!(errors.is_empty(), "ABI drift:\n  {}", errors.join("\n  "));
}

#[test]
fn map_names_match_the_object() {
    let names = object_map_names(&btf_json_of(pop_ebpf::pop_object()));
    assert!(
        names.len() >= 20,
        "only {} maps found: {names:?}",
        names.len()
    );
    let errors = map_name_errors(&names, pop_common::maps::ALL);
    assert!(errors.is_empty(), "ABI drift:\n  {}", errors.join("\n  "));
}

#[test]
fn defines_match_abi_h() {
    let errors = define_errors(&parse_header_defines(&abi_header()));
    assert!(errors.is_empty(), "ABI drift:\n  {}", errors.join("\n  "));
}

/// The checks fail on broken copies of the real BTF and abi.h.
#[test]
fn check_drift_is_detected() {
    let json = btf_json_of(pop_ebpf::pop_object());
    let header = abi_header();

    // A field moves: pop_nexthop.mtu 4 bytes further.
    let mut moved = json.clone();
    for t in moved["types"].as_array_mut().unwrap() {
        if t["name"] == "pop_nexthop" {
            for m in t["members"].as_array_mut().unwrap() {
                if m["name"] == "mtu" {
                    m["bits_offset"] = Value::from(m["bits_offset"].as_u64().unwrap() + 32);
                }
            }
        }
    }
    let errors = layout_errors(&parse_btf(&moved).unwrap(), pop_common::layouts());
    assert!(
        errors.iter().any(|e| e.contains("pop_nexthop.mtu")),
        "a moved field went unnoticed: {errors:?}"
    );

    // A struct grows a field.
    let mut grown = json.clone();
    for t in grown["types"].as_array_mut().unwrap() {
        if t["name"] == "pop_config" {
            let size = t["size"].as_u64().unwrap();
            t["size"] = Value::from(size + 4);
            t["members"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"name": "extra", "type_id": 1, "bits_offset": size * 8}));
        }
    }
    let errors = layout_errors(&parse_btf(&grown).unwrap(), pop_common::layouts());
    assert!(
        errors.iter().any(|e| e.contains("pop_config: size"))
            && errors.iter().any(|e| e.contains("pop_config.extra")),
        "a grown struct went unnoticed: {errors:?}"
    );

    // A constant changes in abi.h.
    let changed = header.replace("POP_DROP_MARTIAN = 5", "POP_DROP_MARTIAN = 6");
    assert_ne!(changed, header, "abi.h no longer has POP_DROP_MARTIAN = 5");
    let (errors, _) = constant_errors(
        &Btf::default(),
        &parse_header_enums(&changed).unwrap(),
        pop_common::constants(),
    );
    assert!(
        errors.iter().any(|e| e.contains("POP_DROP_MARTIAN")),
        "a changed constant went unnoticed: {errors:?}"
    );

    // A constant changes in BTF (when clang emits the enum, BTF wins).
    let mut btf = parse_btf(&json).unwrap();
    btf.enum_values.insert("POP_PASS_TTL".into(), 42);
    let (errors, from_btf) = constant_errors(
        &btf,
        &parse_header_enums(&header).unwrap(),
        pop_common::constants(),
    );
    assert!(from_btf >= 1);
    assert!(
        errors.iter().any(|e| e.contains("POP_PASS_TTL: 42 in BTF")),
        "a changed BTF enum value went unnoticed: {errors:?}"
    );

    // A new enum entry in abi.h without a Rust mirror.
    let added = header.replace(
        "\tPOP_DROP_MAX = 16,",
        "\tPOP_DROP_NEW_REASON = 6,\n\tPOP_DROP_MAX = 16,",
    );
    assert_ne!(added, header, "abi.h no longer has POP_DROP_MAX = 16");
    let (errors, _) = constant_errors(
        &Btf::default(),
        &parse_header_enums(&added).unwrap(),
        pop_common::constants(),
    );
    assert!(
        errors.iter().any(|e| e.contains("POP_DROP_NEW_REASON")),
        "an unmirrored enum entry went unnoticed: {errors:?}"
    );

    // A map size changes.
    let resized = header.replace("#define POP_MAX_IFACES 1024", "#define POP_MAX_IFACES 128");
    assert_ne!(resized, header);
    let errors = define_errors(&parse_header_defines(&resized));
    assert!(
        errors.iter().any(|e| e.contains("POP_MAX_IFACES")),
        "a changed #define went unnoticed: {errors:?}"
    );

    // A define added to abi.h without a mirror.
    let added = header.replace(
        "#define POP_MAX_IFACES 1024",
        "#define POP_MAX_IFACES 1024\n#define POP_MAX_WIDGETS 7",
    );
    let errors = define_errors(&parse_header_defines(&added));
    assert!(
        errors.iter().any(|e| e.contains("POP_MAX_WIDGETS")),
        "an unmirrored #define went unnoticed: {errors:?}"
    );

    // A map renamed in the object, and one pop-common lists but the object lacks.
    let mut names = object_map_names(&json);
    let renamed = names
        .iter()
        .position(|n| n == "routes_v4")
        .expect("routes_v4");
    names[renamed] = "routes_v4_new".into();
    let errors = map_name_errors(&names, pop_common::maps::ALL);
    assert!(
        errors.iter().any(|e| e.contains("routes_v4_new"))
            && errors.iter().any(|e| e.contains("map routes_v4:")),
        "a renamed map went unnoticed: {errors:?}"
    );
}

/// Every difference between the `#define POP_*` of `header` (a file in
/// pop-ebpf/src) and their mirror in pop-common (`mirror`, for messages),
/// both ways.
fn header_define_errors(
    header: &str,
    mirrored: &[(&'static str, i64)],
    mirror: &str,
) -> Vec<String> {
    let path = format!("{}/../pop-ebpf/src/{header}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let defines = parse_header_defines(&text);
    let mut errors = vec![];
    for (name, value) in mirrored {
        match defines.get(*name) {
            Some(Some(c)) if c == value => {}
            other => errors.push(format!(
                "#define {name}: {other:?} in {header}, {value} in pop-common"
            )),
        }
    }
    for name in defines.keys().filter(|n| n.starts_with("POP_")) {
        if !mirrored.iter().any(|(n, _)| n == name) {
            errors.push(format!("#define {name}: in {header} but not in {mirror}"));
        }
    }
    errors
}

/// pop's object includes fib4.h (the IPv4 FIB's maps and lookup): each of its
/// `#define POP_*` must be mirrored in `pop_common::fib4::defines()` with the
/// same value, and the other way round.
#[test]
fn fib4_defines_match_fib4_h() {
    let mirrored = pop_common::fib4::defines();
    let errors = header_define_errors("fib4.h", mirrored, "pop_common::fib4::defines()");
    assert!(
        mirrored.len() >= 9,
        "pop_common::fib4::defines() lost entries"
    );
    assert!(errors.is_empty(), "ABI drift:\n  {}", errors.join("\n  "));
}

/// The same for fib6.h (the IPv6 FIB's maps and lookup) and
/// `pop_common::fib6::defines()`; a changed value is caught.
#[test]
fn fib6_defines_match_fib6_h() {
    let mirrored = pop_common::fib6::defines();
    let errors = header_define_errors("fib6.h", mirrored, "pop_common::fib6::defines()");
    assert!(
        mirrored.len() >= 9,
        "pop_common::fib6::defines() lost entries"
    );
    assert!(errors.is_empty(), "ABI drift:\n  {}", errors.join("\n  "));
    let mut drifted = mirrored.to_vec();
    drifted[0].1 += 1;
    assert!(
        !header_define_errors("fib6.h", &drifted, "drifted").is_empty(),
        "a changed #define went unnoticed"
    );
}

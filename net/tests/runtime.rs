//! The process sets up what its runtime needs before the shards start. (The runtime's own fix, that glommio
//! never parks a shard with runnable work, is pinned by the unit tests of `net/src/server.rs`.)

mod common;

/// A field of `/proc/<pid>/status` or a row of `/proc/<pid>/limits`, as a number.
fn proc_number(pid: u32, file: &str, prefix: &str, field: usize) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    let line = text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in {file}"));
    let value = line[prefix.len()..].split_whitespace().nth(field).unwrap();
    if value == "unlimited" {
        u64::MAX
    } else {
        value.parse().unwrap()
    }
}

#[test]
fn the_descriptor_table_is_grown_before_the_shards_start() {
    // Growing it later, with the shards running, makes an accepting shard wait for an RCU grace period at
    // each doubling (net/src/server.rs, `reserve_descriptors`).
    let server = common::Server::start(&["--no-simulator", "--max-connections", "3000"]);
    let pid = server.child.id();
    let soft_limit = proc_number(pid, "limits", "Max open files", 0);
    let table = proc_number(pid, "status", "FDSize:", 0);
    let wanted = (3000 + 1024).min(soft_limit);
    assert!(table >= wanted, "descriptor table of {table} slots, wanted {wanted} (soft limit {soft_limit})");
}

//! permessage-deflate on real frames (benches/fixtures/frames.jsonl, recorded by perf/capture-frames.py from
//! the simulated feed in every dialect): how long each deflate implementation takes to compress a frame on
//! its own (server_no_context_takeover: what the server does once per update), and what it saves.
//!
//! Compared: flate2 with zlib-rs (the server's, through `tickwire_core::deflate::compress_frame`), miniz_oxide
//! (flate2's default backend, pure Rust), and libdeflater (libdeflate, C: whole buffers only, which is all
//! a sender without context takeover needs, but it cannot inflate a client's stream with context takeover).
//! Before measuring, prints the compression ratio of each implementation and level per dialect.
//!
//! `cargo bench -p tickwire-benches --bench deflate`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tickwire_core::deflate::{compress_frame, Level};
use tickwire_core::ws::{frame, Opcode};

/// Each recorded frame's dialect and its whole server frame (header and JSON).
fn frames() -> Vec<(String, Bytes)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/frames.jsonl");
    std::fs::read_to_string(path)
        .expect("benches/fixtures/frames.jsonl")
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let text = v["text"].as_str().unwrap();
            (v["dialect"].as_str().unwrap().to_owned(), frame(Opcode::Text, text.as_bytes()))
        })
        .collect()
}

fn payload(f: &[u8]) -> &[u8] {
    tickwire_core::ws::payload_of(f)
}

/// The wire length of one frame deflated on its own by each implementation (raw deflate; zlib-rs as the
/// server sends it, sync-flushed with the empty block's 4 bytes left off; the whole-buffer APIs of
/// miniz_oxide and libdeflate end with a final block instead, within a byte or two of it).
fn zlib_rs(f: &Bytes, level: u32) -> usize {
    // The server's own path; frames it would not deflate (under 64 bytes, or not smaller) count as plain.
    compress_frame(f, Level { level, threshold: 64 }).map_or(f.len(), |z| z.len())
}

fn miniz(f: &Bytes, level: u8) -> usize {
    let p = payload(f);
    if p.len() < 64 {
        return f.len();
    }
    let z = miniz_oxide::deflate::compress_to_vec(p, level);
    (f.len() - p.len()) + z.len().min(p.len())
}

fn libdeflate(c: &mut libdeflater::Compressor, out: &mut Vec<u8>, f: &Bytes) -> usize {
    let p = payload(f);
    if p.len() < 64 {
        return f.len();
    }
    out.resize(c.deflate_compress_bound(p.len()), 0);
    let n = c.deflate_compress(p, out).unwrap();
    (f.len() - p.len()) + n.min(p.len())
}

fn ratios(frames: &[(String, Bytes)]) {
    let dialects = ["canonical", "legacy", "portfolio", "fastws"];
    println!("compression on {} recorded frames: wire bytes deflated / plain (lower is better)", frames.len());
    println!(
        "{:<24} {:>10} {:>10} {:>10} {:>10}",
        "implementation", dialects[0], dialects[1], dialects[2], dialects[3]
    );
    let mut ld1 = libdeflater::Compressor::new(libdeflater::CompressionLvl::new(1).unwrap());
    let mut ld6 = libdeflater::Compressor::new(libdeflater::CompressionLvl::new(6).unwrap());
    let mut out = Vec::new();
    type Size<'a> = Box<dyn FnMut(&Bytes) -> usize + 'a>;
    let rows: Vec<(&str, Size<'_>)> = vec![
        ("zlib-rs level 1", Box::new(|f| zlib_rs(f, 1))),
        ("zlib-rs level 2", Box::new(|f| zlib_rs(f, 2))),
        ("zlib-rs level 4", Box::new(|f| zlib_rs(f, 4))),
        ("zlib-rs level 6", Box::new(|f| zlib_rs(f, 6))),
        ("miniz_oxide level 1", Box::new(|f| miniz(f, 1))),
        ("miniz_oxide level 6", Box::new(|f| miniz(f, 6))),
        ("libdeflate level 1", Box::new(move |f| libdeflate(&mut ld1, &mut out, f))),
        (
            "libdeflate level 6",
            Box::new({
                let mut out = Vec::new();
                move |f| libdeflate(&mut ld6, &mut out, f)
            }),
        ),
    ];
    for (name, mut size) in rows {
        let cells: Vec<String> = dialects
            .iter()
            .map(|d| {
                let (plain, z) =
                    frames.iter().filter(|(fd, _)| fd == d).fold((0, 0), |(p, z), (_, f)| (p + f.len(), z + size(f)));
                if plain == 0 {
                    "-".into()
                } else {
                    format!("{:.3}", z as f64 / plain as f64)
                }
            })
            .collect();
        println!("{name:<24} {:>10} {:>10} {:>10} {:>10}", cells[0], cells[1], cells[2], cells[3]);
    }
    let small = frames.iter().filter(|(_, f)| payload(f).len() < 64).count();
    println!("frames under the 64-byte threshold (sent plain): {small} of {}", frames.len());
}

fn bench(c: &mut Criterion) {
    let frames = frames();
    ratios(&frames);
    let bytes: usize = frames.iter().map(|(_, f)| f.len()).sum();
    let mut g = c.benchmark_group("deflate_recorded_frames");
    g.throughput(Throughput::Bytes(bytes as u64));
    for level in [1u32, 6] {
        g.bench_function(format!("zlib_rs_level_{level}"), |b| {
            b.iter(|| frames.iter().map(|(_, f)| zlib_rs(black_box(f), level)).sum::<usize>())
        });
        g.bench_function(format!("miniz_oxide_level_{level}"), |b| {
            b.iter(|| frames.iter().map(|(_, f)| miniz(black_box(f), level as u8)).sum::<usize>())
        });
        let mut ld = libdeflater::Compressor::new(libdeflater::CompressionLvl::new(level as i32).unwrap());
        let mut out = Vec::new();
        g.bench_function(format!("libdeflate_level_{level}"), |b| {
            b.iter(|| frames.iter().map(|(_, f)| libdeflate(&mut ld, &mut out, black_box(f))).sum::<usize>())
        });
    }
    for level in [2u32, 4] {
        g.bench_function(format!("zlib_rs_level_{level}"), |b| {
            b.iter(|| frames.iter().map(|(_, f)| zlib_rs(black_box(f), level)).sum::<usize>())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Micro-benchmarks of the hot paths: record decoding and each /proc
//! parser, on inputs shaped like the real ones.

use criterion::{criterion_group, criterion_main, Criterion};
use dumper::collect::bpf::decode;
use dumper::collect::{fdinfo, proc_tuned, smaps};
use dumper_common::{RecordHeader, VmaRecord, KIND_VMA};
use std::hint::black_box;

fn vma_stream(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * std::mem::size_of::<VmaRecord>());
    for i in 0..n {
        // SAFETY: a plain-old-data record, zeroed then filled.
        let mut r: VmaRecord = unsafe { std::mem::zeroed() };
        r.hdr = RecordHeader::new(KIND_VMA, std::mem::size_of::<VmaRecord>());
        r.start = 0x7f00_0000_0000 + (i as u64) * 4096;
        r.end = r.start + 4096;
        let bytes = unsafe {
            std::slice::from_raw_parts(
                &r as *const VmaRecord as *const u8,
                std::mem::size_of::<VmaRecord>(),
            )
        };
        out.extend_from_slice(bytes);
    }
    out
}

fn smaps_text(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        let start = 0x7f00_0000_0000u64 + i as u64 * 4096;
        let head = format!("{start:x}-{:x} r--p 00001000 fe:00 325843", start + 4096);
        s += &format!("{head:<72} /usr/lib/x86_64-linux-gnu/libc.so.6\n");
        for k in [
            "Size",
            "KernelPageSize",
            "MMUPageSize",
            "Rss",
            "Pss",
            "Pss_Dirty",
            "Shared_Clean",
            "Shared_Dirty",
            "Private_Clean",
            "Private_Dirty",
            "Referenced",
            "Anonymous",
            "KSM",
            "LazyFree",
            "AnonHugePages",
            "ShmemPmdMapped",
            "FilePmdMapped",
            "Shared_Hugetlb",
            "Private_Hugetlb",
            "Swap",
            "SwapPss",
            "Locked",
        ] {
            s += &format!("{k}:{:>20} kB\n", 4);
        }
        s += "THPeligible:    0\nVmFlags: rd mr mw me sd \n";
    }
    s
}

fn benches(c: &mut Criterion) {
    let stream = vma_stream(1000);
    c.bench_function("decode 1000 vma records", |b| {
        b.iter(|| decode::<VmaRecord>(black_box(&stream)).unwrap())
    });
    let fdi = "pos:\t4096\nflags:\t0104002\nmnt_id:\t25\nino:\t1234567\n";
    c.bench_function("fdinfo parse", |b| {
        b.iter(|| fdinfo::parse(black_box(fdi)).unwrap())
    });
    let sm = smaps_text(100);
    c.bench_function("smaps parse, 100 mappings", |b| {
        b.iter(|| smaps::parse(black_box(&sm)).unwrap().len())
    });
    let stat = b"4242 (dumper) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 123 1000 10 18446744073709551615 1 1 0 0 0 0 0 4096 16384 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
    c.bench_function("stat parse (tuned)", |b| {
        b.iter(|| proc_tuned::parse_stat(black_box(stat)).unwrap().ppid)
    });
    let status = std::fs::read("/proc/self/status").unwrap();
    c.bench_function("status parse (tuned)", |b| {
        b.iter(|| proc_tuned::parse_status(black_box(&status)).unwrap().tgid)
    });
}

criterion_group!(parsers, benches);
criterion_main!(parsers);

//! The fuzz corpus (fuzz/corpus/image_entries, seeded from a real dump of
//! the sample tree) through every image decoder: the seeds decode, and no
//! truncation or bit flip of them makes a decoder, a check or `show`
//! panic. `cargo xtask fuzz` goes further with libFuzzer.

use std::path::Path;

use dumper::image::read::exercise as feed;

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/image_entries");
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn seeds_decode() {
    let seeds = corpus();
    for name in ["manifest", "memory", "inventory"] {
        let (_, b) = seeds
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("seed {name} missing"));
        assert!(
            feed(b),
            "seed {name} no longer decodes: the format changed; dump the sample tree and copy its entries over fuzz/corpus/image_entries/{{manifest,memory,inventory}}"
        );
    }
}

#[test]
fn damaged_seeds_never_panic() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for (_, b) in corpus() {
        // Every cut in the header and the first bytes, then cuts spread
        // over the rest.
        let step = (b.len() / 512).max(1);
        for cut in (0..b.len().min(256)).chain((256..b.len()).step_by(step)) {
            feed(&b[..cut]);
        }
        for _ in 0..1500 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut d = b.clone();
            let at = (x as usize) % d.len();
            d[at] ^= 1 << (x >> 60 & 7);
            // Header flips are refused up front; keep most flips in the
            // payload, where the decoder itself must cope.
            feed(&d);
        }
    }
}

//! Every image entry decoder, on arbitrary bytes: an error is fine, a
//! panic, a hang or an out-of-memory is a bug. Decoded entries go through
//! the same checks `dumper show` relies on, then through `show` itself.
#![no_main]

use dumper::image::{self, read, show, Kind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = image::decode::<image::Manifest>("f", Kind::Manifest, data);
    if let Ok(m) = image::decode::<image::Memory>("f", Kind::Memory, data) {
        let _ = read::check_ranges(&m, 64, "f");
    }
    if let Ok(inv) = image::decode::<image::Inventory>("f", Kind::Inventory, data) {
        if read::check_inventory(&inv, "f").is_ok() {
            let img = read::Image {
                manifest: Default::default(),
                inventory: inv,
                memory: Default::default(),
                pages: vec![],
            };
            let _ = show::text(&img);
            let _ = show::json(&img);
        }
    }
});

//! Every image entry decoder, on arbitrary bytes: an error is fine, a
//! panic, a hang or an out-of-memory is a bug. Decoded entries go through
//! the same checks `dumper show` relies on, then through `show` itself
//! (`dumper::image::read::exercise`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dumper::image::read::exercise(data);
});

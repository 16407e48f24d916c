//! The fleet server's batch decoder: any body, plain or gzip, gives a valid batch or a
//! 4xx error, never a panic (`watchpost_fleet_protocol::fuzz_batch`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    watchpost_fleet_protocol::fuzz_batch(data);
});

//! Fuzzes the odrl reader: no panic, and a parsed policy round-trips and evaluates.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    liutong_policy::fuzzing::odrl(data);
});

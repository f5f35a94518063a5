//! Fuzz the streaming RDB reader (header, records, CRC64 trailer): it reads bytes straight
//! from the network during a backup, so any input must end in `Ok` or an error, never a
//! panic, a hang or an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = zdr_redis::rdb::validate_bytes(data);
    // With a valid header in front, the fuzzer reaches the record parser quickly.
    let mut framed = b"REDIS0010".to_vec();
    framed.extend_from_slice(data);
    let _ = zdr_redis::rdb::validate_bytes(&framed);
});

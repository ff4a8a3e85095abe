#![no_main]
// The invariants are documented and asserted in provisioner::fuzz::ipxe_query.
libfuzzer_sys::fuzz_target!(|data: &[u8]| provisioner::fuzz::ipxe_query(data));

#![no_main]
// The invariants are documented and asserted in provisioner::fuzz::dhcp.
libfuzzer_sys::fuzz_target!(|data: &[u8]| provisioner::fuzz::dhcp(data));

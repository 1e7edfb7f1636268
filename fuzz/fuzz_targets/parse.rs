//! The header parser on arbitrary bytes: never panics, and whatever parses formats back to
//! exactly the bytes it came from (one spelling per credential).
#![no_main]

use armor_psk::psk::Credential;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(credential) = Credential::parse_bytes(data) {
        let formatted = credential.to_string();
        let original = std::str::from_utf8(data).unwrap_or_default();
        let scheme_len = armor_psk::psk::SCHEME.len();
        let params = original[scheme_len..].trim_start_matches(' ');
        assert_eq!(&formatted[scheme_len + 1..], params);
    }
});

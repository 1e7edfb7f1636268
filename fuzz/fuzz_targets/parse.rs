//! The header parser on arbitrary bytes: never panics, refuses anything longer than the cap,
//! and whatever parses formats back to exactly the bytes it came from (one spelling per
//! credential), with each field inside its documented bounds.
#![no_main]

use armor_psk::psk::{Credential, MAX_HEADER_LEN, MAX_KEY_ID_LEN, MAX_NONCE_LEN, SCHEME};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(credential) = Credential::parse_bytes(data) else {
        return;
    };
    assert!(data.len() <= MAX_HEADER_LEN);
    let original = std::str::from_utf8(data).expect("a parsed header is UTF-8");
    assert!(original.is_ascii());
    let params = original[SCHEME.len()..].trim_start_matches(' ');
    let formatted = credential.to_string();
    assert_eq!(&formatted[SCHEME.len() + 1..], params);
    assert!((1..=MAX_KEY_ID_LEN).contains(&credential.key_id().len()));
    assert!((1..=MAX_NONCE_LEN).contains(&credential.nonce().len()));
    assert!(credential.timestamp() >= 0);
    assert_eq!(Credential::parse(&formatted), Ok(credential));
});

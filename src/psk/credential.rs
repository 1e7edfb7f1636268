//! The `Authorization: ARMOR-PSK {keyId}:{signature}:{nonce}:{timestamp}` credential.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// The authentication scheme name, as clients send it.
pub const SCHEME: &str = "ARMOR-PSK";

/// Length in bytes of an HMAC-SHA512 tag.
pub const MAC_LEN: usize = 64;

/// Length of the canonical padded base64 spelling of a [`MAC_LEN`]-byte tag.
pub const ENCODED_MAC_LEN: usize = 88;

/// Longest key id accepted, in characters.
pub const MAX_KEY_ID_LEN: usize = 256;

/// Longest nonce accepted, in characters (the Armor documentation's limit).
pub const MAX_NONCE_LEN: usize = 128;

/// Longest header value looked at, in bytes: room for the longest valid credential with a
/// generous run of spaces after the scheme. A longer value is refused before it is split.
pub const MAX_HEADER_LEN: usize = 1024;

/// A parsed ARMOR-PSK credential, borrowing from the header value it came from.
///
/// ```
/// use armor_psk::psk::Credential;
///
/// let header = "ARMOR-PSK 20a37099-4a0b-432f-bf46-5fa690a0405c:\
///     8wliK5PMXBrMNQX0DmXkkpC2YD5j+QtPH2xVRZM7jaaS0hC6jhRmtxy+nKJidDnYTpFc6blsO7+4VfKqslbqzA==:\
///     8jbj872s2h:1528140529";
/// let credential = Credential::parse(header).unwrap();
/// assert_eq!(credential.key_id(), "20a37099-4a0b-432f-bf46-5fa690a0405c");
/// assert_eq!(credential.nonce(), "8jbj872s2h");
/// assert_eq!(credential.timestamp(), 1528140529);
/// assert_eq!(credential.to_string(), header);
/// ```
#[derive(Clone)]
pub struct Credential<'a> {
    key_id: &'a str,
    mac: [u8; MAC_LEN],
    nonce: &'a str,
    timestamp: i64,
}

/// The MACs are compared in constant time, and whatever the other fields gave: comparing a
/// credential with one an attacker made must not tell how much of the MAC matched.
impl PartialEq for Credential<'_> {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        let fields = self.key_id == other.key_id
            && self.nonce == other.nonce
            && self.timestamp == other.timestamp;
        bool::from(self.mac.ct_eq(&other.mac)) & fields
    }
}

impl Eq for Credential<'_> {}

/// Why a header value is not a well-formed ARMOR-PSK credential.
///
/// The variants name the fault without echoing the value, so they are safe to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedCredential {
    /// The value does not start with the `ARMOR-PSK` scheme followed by a space.
    #[error("the scheme is not ARMOR-PSK")]
    WrongScheme,
    /// The parameters are not exactly four `:`-separated fields.
    #[error("expected exactly four ':'-separated fields (keyId:signature:nonce:timestamp)")]
    FieldCount,
    /// The key id is empty, too long, or holds a character that is not visible ASCII, or a `:`.
    #[error("the key id must be 1 to 256 visible ASCII characters, without ':'")]
    KeyId,
    /// The signature is not the canonical padded base64 encoding of 64 bytes.
    #[error(
        "the signature must be the padded standard base64 encoding of 64 bytes (88 characters)"
    )]
    Signature,
    /// The nonce is empty, too long, or holds a character that is not visible ASCII, or a `:`.
    #[error("the nonce must be 1 to 128 visible ASCII characters, without ':'")]
    Nonce,
    /// The timestamp is not plain decimal digits without a leading zero that fit in an `i64`.
    #[error("the timestamp must be Unix seconds as plain decimal digits with no leading zero")]
    Timestamp,
    /// More than one `Authorization` header was sent.
    #[error("more than one Authorization header")]
    MultipleHeaders,
    /// The header value is not UTF-8 (a value that is, but not ASCII, fails at the field that
    /// holds the other characters).
    #[error("the header value is not UTF-8")]
    NotAscii,
    /// The header value is longer than any valid credential.
    #[error("the header value is longer than 1024 bytes")]
    TooLong,
}

impl<'a> Credential<'a> {
    /// Builds a credential from its parts, checking each as [`Credential::parse`] would.
    pub fn new(
        key_id: &'a str,
        mac: [u8; MAC_LEN],
        nonce: &'a str,
        timestamp: i64,
    ) -> Result<Self, MalformedCredential> {
        check_token(key_id, MAX_KEY_ID_LEN).ok_or(MalformedCredential::KeyId)?;
        check_token(nonce, MAX_NONCE_LEN).ok_or(MalformedCredential::Nonce)?;
        if timestamp < 0 {
            return Err(MalformedCredential::Timestamp);
        }
        Ok(Self {
            key_id,
            mac,
            nonce,
            timestamp,
        })
    }

    /// Parses an `Authorization` header value.
    ///
    /// The scheme is matched case-insensitively and must be followed by one or more spaces;
    /// everything after them must be exactly `keyId:signature:nonce:timestamp`.
    pub fn parse(value: &'a str) -> Result<Self, MalformedCredential> {
        match parse_well_formed(value) {
            Some(credential) => Ok(credential),
            None => Self::parse_fault(value),
        }
    }

    /// [`Credential::parse`] step by step, so that a value that is not well formed gets the
    /// name of its first fault.
    fn parse_fault(value: &'a str) -> Result<Self, MalformedCredential> {
        if value.len() > MAX_HEADER_LEN {
            return Err(MalformedCredential::TooLong);
        }
        if value.eq_ignore_ascii_case(SCHEME) {
            return Err(MalformedCredential::FieldCount);
        }
        let params = strip_scheme(value).ok_or(MalformedCredential::WrongScheme)?;
        let mut fields = params.split(':');
        let (Some(key_id), Some(signature), Some(nonce), Some(timestamp), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(MalformedCredential::FieldCount);
        };
        check_token(key_id, MAX_KEY_ID_LEN).ok_or(MalformedCredential::KeyId)?;
        let mac = decode_mac(signature).ok_or(MalformedCredential::Signature)?;
        check_token(nonce, MAX_NONCE_LEN).ok_or(MalformedCredential::Nonce)?;
        let timestamp = parse_timestamp(timestamp).ok_or(MalformedCredential::Timestamp)?;
        Ok(Self {
            key_id,
            mac,
            nonce,
            timestamp,
        })
    }

    /// Parses raw header bytes, as found in an [`http::HeaderValue`].
    pub fn parse_bytes(value: &'a [u8]) -> Result<Self, MalformedCredential> {
        if value.len() > MAX_HEADER_LEN {
            return Err(MalformedCredential::TooLong);
        }
        let value = std::str::from_utf8(value).map_err(|_| MalformedCredential::NotAscii)?;
        Self::parse(value)
    }

    /// The API key id.
    pub fn key_id(&self) -> &'a str {
        self.key_id
    }

    /// The decoded HMAC-SHA512 tag the client sent.
    pub fn mac(&self) -> &[u8; MAC_LEN] {
        &self.mac
    }

    /// The nonce.
    pub fn nonce(&self) -> &'a str {
        self.nonce
    }

    /// The timestamp, in Unix seconds.
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }
}

/// Formats the credential as a header value, `ARMOR-PSK keyId:signature:nonce:timestamp`.
impl fmt::Display for Credential<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME} {}:{}:{}:{}",
            self.key_id,
            STANDARD.encode(self.mac),
            self.nonce,
            self.timestamp
        )
    }
}

/// The signature is left out: a credential is a bearer of the request's authority until its
/// timestamp leaves the window, so it does not belong in logs.
impl fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("key_id", &self.key_id)
            .field("mac", &"[redacted]")
            .field("nonce", &self.nonce)
            .field("timestamp", &self.timestamp)
            .finish()
    }
}

/// Whether a header value names the ARMOR-PSK scheme (alone, or followed by a space), so that
/// a fault in it is a malformed credential rather than some other scheme's header.
pub(crate) fn names_scheme(value: &[u8]) -> bool {
    value.len() >= SCHEME.len()
        && value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME.as_bytes())
        && matches!(value.get(SCHEME.len()), None | Some(b' '))
}

/// Returns what follows `ARMOR-PSK` and its separating spaces, or `None` for another scheme.
fn strip_scheme(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_at_checked(SCHEME.len())?;
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let params = rest.trim_start_matches(' ');
    (params.len() < rest.len()).then_some(params)
}

/// A key id or nonce: non-empty, at most `max` bytes, visible ASCII only (`:` is the separator,
/// so the split has already kept it out).
fn check_token(token: &str, max: usize) -> Option<()> {
    let valid = !token.is_empty() && token.len() <= max && token.bytes().all(is_token_byte);
    valid.then_some(())
}

fn decode_mac(signature: &str) -> Option<[u8; MAC_LEN]> {
    if signature.len() != ENCODED_MAC_LEN {
        return None;
    }
    // 88 characters decode to at most 66 bytes; the engine sizes its check by that bound.
    let mut decoded = [0u8; 66];
    // The STANDARD engine requires canonical padding and rejects non-zero trailing bits, so
    // only one spelling of each 64-byte tag gets through.
    match STANDARD.decode_slice(signature, &mut decoded) {
        Ok(MAC_LEN) => {
            let mut mac = [0u8; MAC_LEN];
            mac.copy_from_slice(&decoded[..MAC_LEN]);
            Some(mac)
        }
        _ => None,
    }
}

/// The credential in `value` if it is well formed, in one pass over it; `None` for anything
/// else, which [`Credential::parse_fault`] then names. Accepts exactly what that accepts.
fn parse_well_formed(value: &str) -> Option<Credential<'_>> {
    if value.len() > MAX_HEADER_LEN {
        return None;
    }
    let (scheme, rest) = value.split_at_checked(SCHEME.len())?;
    let spaces = rest.bytes().take_while(|&b| b == b' ').count();
    if !scheme.eq_ignore_ascii_case(SCHEME) || spaces == 0 {
        return None;
    }
    let (key_id, rest) = token(&rest[spaces..], MAX_KEY_ID_LEN)?;
    let (signature, rest) = rest.split_at_checked(ENCODED_MAC_LEN)?;
    let (nonce, timestamp) = token(rest.strip_prefix(':')?, MAX_NONCE_LEN)?;
    Some(Credential {
        key_id,
        mac: decode_mac(signature)?,
        nonce,
        timestamp: parse_timestamp(timestamp)?,
    })
}

/// A key id or nonce at the start of `text` (as [`check_token`] wants it) and what follows
/// its `:`.
fn token(text: &str, max: usize) -> Option<(&str, &str)> {
    let end = token_len(text.as_bytes());
    if end == 0 || end > max || *text.as_bytes().get(end)? != b':' {
        return None;
    }
    // `end` and `end + 1` are boundaries: the bytes before and at `end` are ASCII.
    Some((&text[..end], &text[end + 1..]))
}

/// How many bytes at the start of `text` a key id or nonce may hold, looked at eight at a
/// time while none of the eight ends the run (a key id is typically a 36-character UUID).
fn token_len(text: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH_BITS: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut len = 0;
    for chunk in text.chunks_exact(8) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        let word = u64::from_ne_bytes(bytes);
        // Each sets the high bit of every byte it looks for (below 0x21, above 0x7e, `:`) and
        // at most of bytes above one of those (a borrow or carry runs upwards from it): right
        // about whether the word holds one, in either byte order, which is all that is asked.
        let below = word.wrapping_sub(ONES * 0x21) & !word;
        let above = word.wrapping_add(ONES) | word;
        let colons = word ^ (ONES * u64::from(b':'));
        let colon = colons.wrapping_sub(ONES) & !colons;
        if (below | above | colon) & HIGH_BITS != 0 {
            break;
        }
        len += 8;
    }
    let rest = &text[len..];
    len + rest
        .iter()
        .position(|&b| !is_token_byte(b))
        .unwrap_or(rest.len())
}

/// A byte a key id or nonce may hold: visible ASCII but the `:` that ends it.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_graphic() && b != b':'
}

/// Plain decimal digits, no leading zero, that fit in an `i64`.
fn parse_timestamp(digits: &str) -> Option<i64> {
    match digits.as_bytes() {
        [] => None,
        [b'0'] => Some(0),
        [b'0', ..] => None,
        // Nineteen digits fit in a `u64` (and every `i64` is at most nineteen), so the sum
        // needs no check until the end.
        bytes if bytes.len() <= 19 => {
            let value = bytes.iter().try_fold(0u64, |value, &b| {
                let digit = b.wrapping_sub(b'0');
                (digit <= 9).then_some(value * 10 + u64::from(digit))
            })?;
            i64::try_from(value).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_are_equal_when_every_field_is() {
        let credential = |mac_end: u8, nonce| {
            let mut mac = [7u8; MAC_LEN];
            mac[MAC_LEN - 1] = mac_end;
            Credential::new("key", mac, nonce, 1).unwrap()
        };
        assert_eq!(credential(7, "n"), credential(7, "n"));
        assert_ne!(credential(7, "n"), credential(8, "n"));
        assert_ne!(credential(7, "n"), credential(7, "m"));
    }

    use super::*;

    const KEY_ID: &str = "20a37099-4a0b-432f-bf46-5fa690a0405c";
    const SIGNATURE: &str =
        "8wliK5PMXBrMNQX0DmXkkpC2YD5j+QtPH2xVRZM7jaaS0hC6jhRmtxy+nKJidDnYTpFc6blsO7+4VfKqslbqzA==";

    fn header(key_id: &str, signature: &str, nonce: &str, timestamp: &str) -> String {
        format!("ARMOR-PSK {key_id}:{signature}:{nonce}:{timestamp}")
    }

    /// Header values near a credential: each part valid or not, and sometimes a character
    /// put in somewhere.
    fn near_credentials() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let scheme = prop_oneof![
            Just("ARMOR-PSK".to_owned()),
            Just("armor-psk".to_owned()),
            "[A-Za-z-]{0,10}"
        ];
        let spaces = prop_oneof![Just(" ".to_owned()), Just("   ".to_owned()), "[ \t]{0,2}"];
        let key_id = prop_oneof![Just(KEY_ID.to_owned()), "[!-~]{0,8}", "k{250,260}"];
        let signature = prop_oneof![Just(SIGNATURE.to_owned()), "[A-Za-z0-9+/=:]{86,90}"];
        let nonce = prop_oneof![Just("8jbj872s2h".to_owned()), "[ -~é]{0,8}", "n{125,130}"];
        let timestamp = prop_oneof![Just("1528140529".to_owned()), "[0-9+ -]{0,21}"];
        let insert = proptest::option::of((any::<usize>(), any::<char>()));
        (scheme, spaces, key_id, signature, nonce, timestamp, insert).prop_map(
            |(scheme, spaces, key_id, signature, nonce, timestamp, insert)| {
                let mut value = format!("{scheme}{spaces}{key_id}:{signature}:{nonce}:{timestamp}");
                if let Some((at, extra)) = insert {
                    let at = (0..=at % (value.len() + 1))
                        .rev()
                        .find(|at| value.is_char_boundary(*at))
                        .unwrap_or(0);
                    value.insert(at, extra);
                }
                value
            },
        )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        #[test]
        fn the_one_pass_parser_accepts_exactly_what_the_step_by_step_one_does(
            value in near_credentials()
        ) {
            let step_by_step = Credential::parse_fault(&value).ok();
            proptest::prop_assert_eq!(parse_well_formed(&value), step_by_step);
        }

        #[test]
        fn timestamps_parse_as_the_standard_parser_reads_plain_digits(digits in "[0-9]{1,22}") {
            let plain = digits == "0" || !digits.starts_with('0');
            let expected = digits.parse::<i64>().ok().filter(|_| plain);
            proptest::prop_assert_eq!(parse_timestamp(&digits), expected);
        }

        #[test]
        fn a_token_runs_to_the_first_byte_that_may_not_be_in_one(
            text in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            graphic in proptest::collection::vec(0x21u8..0x7f, 0..40),
        ) {
            // Mostly token bytes, so that runs of eight and more are common.
            let text: Vec<u8> = graphic.iter().chain(&text).copied().collect();
            let expected = text.iter().position(|&b| !is_token_byte(b)).unwrap_or(text.len());
            proptest::prop_assert_eq!(token_len(&text), expected);
        }
    }

    #[test]
    fn a_token_ends_at_every_byte_that_may_not_be_in_one_wherever_it_falls() {
        let expected = |text: &[u8]| {
            text.iter()
                .position(|&b| !is_token_byte(b))
                .unwrap_or(text.len())
        };
        // Three words and a tail of three bytes, which the byte loop takes.
        for at in 0..27 {
            for byte in 0..=u8::MAX {
                let mut text = [b'a'; 27];
                text[at] = byte;
                assert_eq!(token_len(&text), expected(&text), "{byte:#04x} at {at}");
                // Beside another byte that ends a token, below it or above it.
                for (neighbour, other) in [(at.wrapping_sub(1), b' '), (at + 1, 0x7f)] {
                    let mut pair = text;
                    if let Some(slot) = pair.get_mut(neighbour) {
                        *slot = other;
                        let message = format!("{byte:#04x} at {at}, {other:#04x} at {neighbour}");
                        assert_eq!(token_len(&pair), expected(&pair), "{message}");
                    }
                }
            }
        }
    }

    #[test]
    fn parses_the_documented_sample() {
        let value = header(KEY_ID, SIGNATURE, "8jbj872s2h", "1528140529");
        let credential = Credential::parse(&value).unwrap();
        assert_eq!(credential.key_id(), KEY_ID);
        assert_eq!(credential.nonce(), "8jbj872s2h");
        assert_eq!(credential.timestamp(), 1528140529);
        assert_eq!(STANDARD.encode(credential.mac()), SIGNATURE);
        assert_eq!(credential.to_string(), value);
    }

    #[test]
    fn scheme_is_case_insensitive_and_spaces_may_repeat() {
        for scheme in ["armor-psk ", "Armor-Psk ", "ARMOR-PSK   "] {
            let value = format!("{scheme}{KEY_ID}:{SIGNATURE}:n:1");
            assert!(Credential::parse(&value).is_ok(), "{value}");
        }
    }

    #[test]
    fn extremes_that_are_allowed() {
        let long_id = "k".repeat(MAX_KEY_ID_LEN);
        let long_nonce = "n".repeat(MAX_NONCE_LEN);
        let max = i64::MAX.to_string();
        assert!(Credential::parse(&header(&long_id, SIGNATURE, &long_nonce, &max)).is_ok());
        assert_eq!(
            Credential::parse(&header("k", SIGNATURE, "n", "0"))
                .unwrap()
                .timestamp(),
            0
        );
    }

    #[test]
    fn malformed_values_are_refused_with_their_reason() {
        use MalformedCredential::*;
        let long_id = "k".repeat(MAX_KEY_ID_LEN + 1);
        let long_nonce = "n".repeat(MAX_NONCE_LEN + 1);
        let overflow = (i64::MAX as u64 + 1).to_string();
        // An unpadded spelling, and one with non-zero trailing bits, of a 64-byte tag.
        let unpadded = SIGNATURE.trim_end_matches('=');
        let noncanonical = SIGNATURE.replace("zA==", "zB==");
        let url_safe = SIGNATURE.replace('+', "-");
        let cases: Vec<(String, MalformedCredential)> = vec![
            (String::new(), WrongScheme),
            ("ARMOR-PSK".into(), FieldCount),
            ("armor-psk".into(), FieldCount),
            (format!("Bearer {KEY_ID}"), WrongScheme),
            (format!("ARMOR-PSKX {KEY_ID}:{SIGNATURE}:n:1"), WrongScheme),
            (format!("ARMOR-PSK\t{KEY_ID}:{SIGNATURE}:n:1"), WrongScheme),
            (format!("ARMOR-PSK {KEY_ID}:{SIGNATURE}:n"), FieldCount),
            (format!("ARMOR-PSK {KEY_ID}:{SIGNATURE}:n:1:2"), FieldCount),
            ("ARMOR-PSK ".into(), FieldCount),
            (header("", SIGNATURE, "n", "1"), KeyId),
            (header(&long_id, SIGNATURE, "n", "1"), KeyId),
            (header("key id", SIGNATURE, "n", "1"), KeyId),
            (header("kéy", SIGNATURE, "n", "1"), KeyId),
            (header(KEY_ID, "", "n", "1"), Signature),
            (header(KEY_ID, unpadded, "n", "1"), Signature),
            (header(KEY_ID, &noncanonical, "n", "1"), Signature),
            (header(KEY_ID, &url_safe, "n", "1"), Signature),
            (header(KEY_ID, &SIGNATURE[4..], "n", "1"), Signature),
            (
                header(KEY_ID, &format!("AAAA{SIGNATURE}"), "n", "1"),
                Signature,
            ),
            (header(KEY_ID, &"=".repeat(88), "n", "1"), Signature),
            (header(KEY_ID, SIGNATURE, "", "1"), Nonce),
            (header(KEY_ID, SIGNATURE, &long_nonce, "1"), Nonce),
            (header(KEY_ID, SIGNATURE, "a b", "1"), Nonce),
            (header(KEY_ID, SIGNATURE, "n\u{7f}", "1"), Nonce),
            (header(KEY_ID, SIGNATURE, "n", ""), Timestamp),
            (header(KEY_ID, SIGNATURE, "n", "01528140529"), Timestamp),
            (header(KEY_ID, SIGNATURE, "n", "00"), Timestamp),
            (header(KEY_ID, SIGNATURE, "n", "+1528140529"), Timestamp),
            (header(KEY_ID, SIGNATURE, "n", "-1528140529"), Timestamp),
            (header(KEY_ID, SIGNATURE, "n", " 1528140529"), Timestamp),
            (header(KEY_ID, SIGNATURE, "n", "1528140529 "), Timestamp),
            (header(KEY_ID, SIGNATURE, "n", "1528140529.5"), Timestamp),
            (header(KEY_ID, SIGNATURE, "n", "1e9"), Timestamp),
            (header(KEY_ID, SIGNATURE, "n", &overflow), Timestamp),
            (header(KEY_ID, SIGNATURE, "n", &"9".repeat(19)), Timestamp),
            (header(KEY_ID, SIGNATURE, "n", &"9".repeat(20)), Timestamp),
            // u64::MAX + 1: a sum that wrapped would read it as 0.
            (
                header(KEY_ID, SIGNATURE, "n", "18446744073709551616"),
                Timestamp,
            ),
            (header(KEY_ID, SIGNATURE, "n", "١٥٢٨"), Timestamp),
            (format!("ARMOR-PSK {}", "k".repeat(64 * 1024)), TooLong),
        ];
        for (value, expected) in cases {
            assert_eq!(Credential::parse(&value), Err(expected), "{value:?}");
        }
    }

    #[test]
    fn tells_its_scheme_from_others() {
        assert!(names_scheme(b"ARMOR-PSK"));
        assert!(names_scheme(b"armor-psk x"));
        assert!(!names_scheme(b"ARMOR-PSKX x"));
        assert!(!names_scheme(b"Bearer x"));
        assert!(!names_scheme(b"ARMOR"));
    }

    #[test]
    fn non_utf8_bytes_are_refused() {
        assert_eq!(
            Credential::parse_bytes(b"ARMOR-PSK \xff:x:y:1"),
            Err(MalformedCredential::NotAscii)
        );
    }

    #[test]
    fn debug_hides_the_signature() {
        let value = header(KEY_ID, SIGNATURE, "n", "1");
        let debug = format!("{:?}", Credential::parse(&value).unwrap());
        assert!(!debug.contains(&SIGNATURE[..20]), "{debug}");
        assert!(debug.contains(KEY_ID));
    }

    #[test]
    fn new_checks_its_parts() {
        let mac = [7u8; MAC_LEN];
        assert_eq!(
            Credential::new("a:b", mac, "n", 1),
            Err(MalformedCredential::KeyId)
        );
        assert_eq!(
            Credential::new("k", mac, "", 1),
            Err(MalformedCredential::Nonce)
        );
        assert_eq!(
            Credential::new("k", mac, "n", -1),
            Err(MalformedCredential::Timestamp)
        );
        let credential = Credential::new("k", mac, "n", 5).unwrap();
        assert_eq!(Credential::parse(&credential.to_string()), Ok(credential));
    }
}

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Length in bytes of an HMAC-SHA256 tag.
pub const TAG_LEN: usize = 32;

/// The only algorithm the scheme names.
pub const ALGORITHM: &str = "hmac-sha256";

/// The signing string's fixed prefix; the `Date` header's value follows it.
pub const SIGNING_PREFIX: &str = "licenseSpring\ndate: ";

/// An `Authorization: algorithm="hmac-sha256",headers="date",signature="…",apikey="…"`
/// credential, borrowing from the header value.
///
/// ```
/// use armor_psk::date_hmac::DateHmacCredential;
///
/// let value = r#"algorithm="hmac-sha256",headers="date",signature="UDysfR6MndUZReo07Y9r+vErn8vSxrnQ5ulit18iJ/Q=",apikey="key-1""#;
/// let credential = DateHmacCredential::parse(value).unwrap();
/// assert_eq!(credential.api_key(), "key-1");
/// ```
#[derive(Clone)]
pub struct DateHmacCredential<'a> {
    api_key: &'a str,
    tag: [u8; TAG_LEN],
}

/// The tags are compared in constant time, and whatever the keys gave (as
/// [`Credential`](crate::psk::Credential)'s MACs are).
impl PartialEq for DateHmacCredential<'_> {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.tag.ct_eq(&other.tag)) & (self.api_key == other.api_key)
    }
}

impl Eq for DateHmacCredential<'_> {}

/// Why a request does not pass the signed-Date scheme. Each kind has the vendor's code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DateHmacError {
    /// No `Authorization` header, or one without all four parameters.
    /// `authorization_missing_params`.
    #[error("the Authorization header must carry algorithm, headers, signature and apikey")]
    MissingParams,
    /// The algorithm is not `hmac-sha256`. `hmac_required`.
    #[error("the algorithm must be hmac-sha256")]
    HmacRequired,
    /// The signed headers are not exactly `date`. `authorization_invalid_headers`.
    #[error("the signed headers must be \"date\"")]
    InvalidHeaders,
    /// No `Date` header, one that is not an IMF-fixdate, or one outside the allowed window.
    /// `date_header_diff`.
    #[error(
        "the Date header is missing, malformed, or too far from the server's time ({server_date})"
    )]
    DateHeaderDiff {
        /// The server's time, as an HTTP date.
        server_date: String,
    },
    /// No active key has this id. `invalid_api_key`.
    #[error("invalid API key")]
    InvalidApiKey,
    /// The signature does not match. `signature_mismatch`.
    #[error("the signature does not match the Date header")]
    SignatureMismatch,
}

impl DateHmacError {
    /// The vendor's error code.
    pub fn code(&self) -> &'static str {
        match self {
            DateHmacError::MissingParams => "authorization_missing_params",
            DateHmacError::HmacRequired => "hmac_required",
            DateHmacError::InvalidHeaders => "authorization_invalid_headers",
            DateHmacError::DateHeaderDiff { .. } => "date_header_diff",
            DateHmacError::InvalidApiKey => "invalid_api_key",
            DateHmacError::SignatureMismatch => "signature_mismatch",
        }
    }
}

impl<'a> DateHmacCredential<'a> {
    /// Parses the comma-separated `name="value"` parameters. `apikey` is also accepted as
    /// `apiKey` (the Python SDK's spelling); parameter names are matched without regard to
    /// ASCII case, and spaces around the commas are allowed.
    pub fn parse(value: &'a str) -> Result<Self, DateHmacError> {
        let (mut algorithm, mut headers, mut signature, mut api_key) = (None, None, None, None);
        for parameter in value.split(',') {
            let (name, quoted) = parameter
                .trim_matches(' ')
                .split_once('=')
                .ok_or(DateHmacError::MissingParams)?;
            let unquoted = quoted
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .ok_or(DateHmacError::MissingParams)?;
            let slot = match name.to_ascii_lowercase().as_str() {
                "algorithm" => &mut algorithm,
                "headers" => &mut headers,
                "signature" => &mut signature,
                "apikey" => &mut api_key,
                _ => continue,
            };
            if slot.replace(unquoted).is_some() {
                return Err(DateHmacError::MissingParams);
            }
        }
        let (Some(algorithm), Some(headers), Some(signature), Some(api_key)) =
            (algorithm, headers, signature, api_key)
        else {
            return Err(DateHmacError::MissingParams);
        };
        if !algorithm.eq_ignore_ascii_case(ALGORITHM) {
            return Err(DateHmacError::HmacRequired);
        }
        if !headers.eq_ignore_ascii_case("date") {
            return Err(DateHmacError::InvalidHeaders);
        }
        // What a signer can send: a `"` would have ended the quoted value.
        if api_key.is_empty() || !api_key.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
            return Err(DateHmacError::MissingParams);
        }
        let tag = decode_tag(signature).ok_or(DateHmacError::SignatureMismatch)?;
        Ok(DateHmacCredential { api_key, tag })
    }

    pub(crate) fn from_parts(api_key: &'a str, tag: [u8; TAG_LEN]) -> Self {
        DateHmacCredential { api_key, tag }
    }

    /// The API key id.
    pub fn api_key(&self) -> &'a str {
        self.api_key
    }

    /// The decoded HMAC-SHA256 tag.
    pub fn tag(&self) -> &[u8; TAG_LEN] {
        &self.tag
    }

    /// Whether the tag is the HMAC-SHA256 of `date` under `key` (constant-time).
    pub fn verify(&self, key: &[u8], date: &str) -> bool {
        keyed(key, date).verify_slice(&self.tag).is_ok()
    }
}

impl fmt::Debug for DateHmacCredential<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DateHmacCredential")
            .field("api_key", &self.api_key)
            .field("tag", &"[redacted]")
            .finish()
    }
}

fn keyed(key: &[u8], date: &str) -> Hmac<Sha256> {
    // HMAC takes keys of every length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
    mac.update(SIGNING_PREFIX.as_bytes());
    mac.update(date.as_bytes());
    mac
}

/// `base64(HMAC-SHA256(key, "licenseSpring\ndate: " + date))`.
pub fn signature(key: &[u8], date: &str) -> String {
    STANDARD.encode(keyed(key, date).finalize().into_bytes())
}

fn decode_tag(signature: &str) -> Option<[u8; TAG_LEN]> {
    let mut decoded = [0u8; 34];
    match STANDARD.decode_slice(signature, &mut decoded) {
        Ok(TAG_LEN) if signature.len() == 44 => {
            let mut tag = [0u8; TAG_LEN];
            tag.copy_from_slice(&decoded[..TAG_LEN]);
            Some(tag)
        }
        _ => None,
    }
}

/// Parses an IMF-fixdate (`Tue, 07 Jun 2011 20:51:35 GMT`) into Unix seconds.
pub fn parse_http_date(date: &str) -> Option<i64> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let unix = time::PrimitiveDateTime::parse(date, &format)
        .ok()?
        .assume_utc()
        .unix_timestamp();
    // As written back, or not the date it says: the parser takes a weekday that is not the
    // date's, and a sign before the year.
    (crate::clock::http_date(unix).as_deref() == Some(date)).then_some(unix)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "kw4qSnpSwXzgiv5yxYpZZmFEd9QAeiKTQ6OuyMja";
    const DATE: &str = "Tue, 07 Jun 2011 20:51:35 GMT";
    const SIGNATURE: &str = "UDysfR6MndUZReo07Y9r+vErn8vSxrnQ5ulit18iJ/Q=";

    #[test]
    fn the_vendors_known_answer() {
        assert_eq!(signature(KEY.as_bytes(), DATE), SIGNATURE);
        let value =
            format!(r#"algorithm="hmac-sha256",headers="date",signature="{SIGNATURE}",apikey="k""#);
        let credential = DateHmacCredential::parse(&value).unwrap();
        assert!(credential.verify(KEY.as_bytes(), DATE));
        assert!(!credential.verify(KEY.as_bytes(), "Tue, 07 Jun 2011 20:51:36 GMT"));
        assert!(!credential.verify(b"other", DATE));
    }

    #[test]
    fn parses_both_sdk_spellings_and_refuses_the_rest() {
        let with = |rest: &str| {
            format!(r#"algorithm="hmac-sha256",headers="date",signature="{SIGNATURE}",{rest}"#)
        };
        assert_eq!(
            DateHmacCredential::parse(&with(r#"apiKey="a""#))
                .unwrap()
                .api_key(),
            "a"
        );
        assert_eq!(
            DateHmacCredential::parse(&with(r#"apikey="b""#))
                .unwrap()
                .api_key(),
            "b"
        );
        let spaced = format!(
            r#"algorithm="hmac-sha256", headers="date", signature="{SIGNATURE}", apikey="c""#
        );
        assert_eq!(DateHmacCredential::parse(&spaced).unwrap().api_key(), "c");
        use DateHmacError::*;
        let cases = [
            (String::new(), MissingParams),
            (
                format!(r#"algorithm="hmac-sha256",headers="date",signature="{SIGNATURE}""#),
                MissingParams,
            ),
            (with(r#"apikey="""#), MissingParams),
            (with(r#"apikey=b"#), MissingParams),
            (with(r#"apikey="a",apiKey="b""#), MissingParams),
            (
                format!(
                    r#"algorithm="rsa-sha256",headers="date",signature="{SIGNATURE}",apikey="a""#
                ),
                HmacRequired,
            ),
            (
                format!(
                    r#"algorithm="hmac-sha256",headers="date host",signature="{SIGNATURE}",apikey="a""#
                ),
                InvalidHeaders,
            ),
            (
                r#"algorithm="hmac-sha256",headers="date",signature="short",apikey="a""#.to_owned(),
                SignatureMismatch,
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(DateHmacCredential::parse(&value), Err(expected), "{value}");
        }
    }

    #[test]
    fn parses_imf_fixdate_only() {
        assert_eq!(parse_http_date(DATE), Some(1_307_479_895));
        assert_eq!(parse_http_date("Tuesday, 07-Jun-11 20:51:35 GMT"), None);
        assert_eq!(parse_http_date("Tue, 07 Jun 2011 20:51:35 +0000"), None);
        // Another weekday than the date's, a signed year, a year of no four digits.
        assert_eq!(parse_http_date("Mon, 07 Jun 2011 20:51:35 GMT"), None);
        assert_eq!(parse_http_date("Tue, 07 Jun +2011 20:51:35 GMT"), None);
        assert_eq!(parse_http_date("Sat, 01 Jan 0000 00:00:00 GMT"), None);
        assert_eq!(
            crate::clock::http_date(1_307_479_895).as_deref(),
            Some(DATE)
        );
    }
}

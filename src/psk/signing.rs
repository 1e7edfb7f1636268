//! The ARMOR-PSK signing string and its three body forms.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha512};

use super::credential::{ENCODED_MAC_LEN, MAC_LEN};

/// An HMAC-SHA512 state keyed by a secret's UTF-8 bytes.
pub type HmacSha512 = Hmac<Sha512>;

/// How the request body enters the signing string.
///
/// The Armor documents and the clients in the field disagree; see the crate's README.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BodyForm {
    /// `base64(SHA-512(body))`: the Python sample, the public Go client, the bash scripts.
    Digest,
    /// The raw body bytes: the C# sample.
    Raw,
    /// Nothing: the body is not signed (what every client sends for a request without a body).
    Empty,
}

impl BodyForm {
    /// Every form, in the order a verifier tries them.
    pub const ALL: [BodyForm; 3] = [BodyForm::Digest, BodyForm::Raw, BodyForm::Empty];

    /// The lower-case name used in configuration, metrics and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            BodyForm::Digest => "digest",
            BodyForm::Raw => "raw",
            BodyForm::Empty => "empty",
        }
    }

    fn bit(self) -> u8 {
        match self {
            BodyForm::Digest => 1,
            BodyForm::Raw => 2,
            BodyForm::Empty => 4,
        }
    }
}

impl fmt::Display for BodyForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a body form name that is not `digest`, `raw` or `empty`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown body form {0:?} (expected digest, raw or empty)")]
pub struct UnknownBodyForm(String);

impl std::str::FromStr for BodyForm {
    type Err = UnknownBodyForm;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        BodyForm::ALL
            .into_iter()
            .find(|form| form.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| UnknownBodyForm(name.to_owned()))
    }
}

/// A set of [`BodyForm`]s.
///
/// ```
/// use armor_psk::psk::{BodyForm, BodyForms};
///
/// let forms = BodyForms::ALL.without(BodyForm::Raw);
/// assert!(forms.contains(BodyForm::Digest));
/// assert!(!forms.contains(BodyForm::Raw));
/// assert_eq!(forms.iter().collect::<Vec<_>>(), [BodyForm::Digest, BodyForm::Empty]);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BodyForms(u8);

impl BodyForms {
    /// All three forms.
    pub const ALL: BodyForms = BodyForms(7);
    /// No form at all (every request is then refused).
    pub const NONE: BodyForms = BodyForms(0);

    /// A set holding only `form`.
    pub fn only(form: BodyForm) -> Self {
        BodyForms(form.bit())
    }

    /// This set with `form` added.
    #[must_use]
    pub fn with(self, form: BodyForm) -> Self {
        BodyForms(self.0 | form.bit())
    }

    /// This set with `form` removed.
    #[must_use]
    pub fn without(self, form: BodyForm) -> Self {
        BodyForms(self.0 & !form.bit())
    }

    /// Whether `form` is in the set.
    pub fn contains(self, form: BodyForm) -> bool {
        self.0 & form.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The forms in the set, in the order of [`BodyForm::ALL`].
    pub fn iter(self) -> impl Iterator<Item = BodyForm> {
        BodyForm::ALL
            .into_iter()
            .filter(move |form| self.contains(*form))
    }
}

impl FromIterator<BodyForm> for BodyForms {
    fn from_iter<I: IntoIterator<Item = BodyForm>>(forms: I) -> Self {
        forms.into_iter().fold(BodyForms::NONE, BodyForms::with)
    }
}

impl fmt::Debug for BodyForms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// The signed parts of a request other than its body:
/// `keyId + METHOD + path + nonce + timestamp`, with no separators.
///
/// `path` is the absolute path as it went on the wire, without the query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigningString<'a> {
    /// The API key id.
    pub key_id: &'a str,
    /// The request method, as sent (`GET`, `POST`, ...).
    pub method: &'a str,
    /// The absolute path, percent-encoding as sent, no query string.
    pub path: &'a str,
    /// The nonce.
    pub nonce: &'a str,
    /// The timestamp, in Unix seconds.
    pub timestamp: i64,
}

impl<'a> SigningString<'a> {
    /// Feeds the parts before the body into `sink`.
    fn feed_prefix(&self, sink: &mut impl FnMut(&[u8])) {
        let mut timestamp = itoa::Buffer::new();
        sink(self.key_id.as_bytes());
        sink(self.method.as_bytes());
        sink(self.path.as_bytes());
        sink(self.nonce.as_bytes());
        sink(timestamp.format(self.timestamp).as_bytes());
    }

    /// The HMAC state after the parts before the body, ready for a body part.
    pub fn keyed_prefix(&self, keyed: &HmacSha512) -> HmacSha512 {
        let mut mac = keyed.clone();
        self.feed_prefix(&mut |bytes| mac.update(bytes));
        mac
    }

    /// Signs these parts and `body` (given as its chunks) under `form`.
    pub fn sign<B: AsRef<[u8]>>(
        &self,
        keyed: &HmacSha512,
        form: BodyForm,
        body: &[B],
    ) -> [u8; MAC_LEN] {
        let mut mac = self.keyed_prefix(keyed);
        feed_body(&mut mac, form, body);
        mac.finalize().into_bytes().into()
    }

    /// The whole signing string for `form`, as text (raw body bytes that are not UTF-8 are
    /// replaced). For diagnostics and tests; signing never builds it.
    pub fn to_text<B: AsRef<[u8]>>(&self, form: BodyForm, body: &[B]) -> String {
        let mut bytes = Vec::new();
        self.feed_prefix(&mut |part| bytes.extend_from_slice(part));
        match form {
            BodyForm::Empty => {}
            BodyForm::Raw => body
                .iter()
                .for_each(|chunk| bytes.extend_from_slice(chunk.as_ref())),
            BodyForm::Digest => bytes.extend_from_slice(&body_digest(body)),
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Feeds the body part of `form` into `mac`, straight from the chunks.
pub(crate) fn feed_body<B: AsRef<[u8]>>(mac: &mut HmacSha512, form: BodyForm, body: &[B]) {
    match form {
        BodyForm::Empty => {}
        BodyForm::Raw => body.iter().for_each(|chunk| mac.update(chunk.as_ref())),
        BodyForm::Digest => mac.update(&body_digest(body)),
    }
}

/// `base64(SHA-512(body))`, the 88 ASCII bytes of the digest form.
pub fn body_digest<B: AsRef<[u8]>>(body: &[B]) -> [u8; ENCODED_MAC_LEN] {
    let mut hasher = Sha512::new();
    body.iter().for_each(|chunk| hasher.update(chunk.as_ref()));
    let mut encoded = [0u8; ENCODED_MAC_LEN];
    let written = STANDARD
        .encode_slice(hasher.finalize(), &mut encoded)
        .unwrap_or_default();
    debug_assert_eq!(written, ENCODED_MAC_LEN);
    encoded
}

/// Which form of `forms` makes `tag` the MAC of `parts` and `body`.
///
/// The prefix is hashed once and each form's body part straight from the chunks; each
/// comparison is constant-time ([`macs_equal`]). For an empty body the raw and empty
/// forms sign the same bytes: they are hashed once, and reported as [`BodyForm::Empty`] when
/// that form is in the set.
pub(crate) fn verify_forms<B: AsRef<[u8]>>(
    keyed: &HmacSha512,
    parts: &SigningString<'_>,
    forms: BodyForms,
    body: &[B],
    tag: &[u8; MAC_LEN],
) -> Option<BodyForm> {
    let prefix = parts.keyed_prefix(keyed);
    let matches = |form| {
        let mut mac = prefix.clone();
        feed_body(&mut mac, form, body);
        mac_matches(mac, tag)
    };
    if body.iter().all(|chunk| chunk.as_ref().is_empty()) {
        let unsigned = [BodyForm::Empty, BodyForm::Raw]
            .into_iter()
            .find(|form| forms.contains(*form));
        return unsigned
            .into_iter()
            .chain(forms.contains(BodyForm::Digest).then_some(BodyForm::Digest))
            .find(|form| matches(*form));
    }
    forms.iter().find(|form| matches(*form))
}

/// Whether the HMAC state `mac`, fed its whole message, ends in `tag`: the verifier's check of
/// a signature, comparing with [`macs_equal`].
///
/// ```
/// use armor_psk::psk::{mac_matches, HmacSha512, SigningString, BodyForm};
/// use hmac::Mac;
///
/// let keyed = HmacSha512::new_from_slice(b"secret").unwrap();
/// let parts = SigningString {
///     key_id: "key",
///     method: "GET",
///     path: "/accounts/2",
///     nonce: "n1",
///     timestamp: 1_528_140_529,
/// };
/// let tag = parts.sign::<&[u8]>(&keyed, BodyForm::Empty, &[]);
/// assert!(mac_matches(parts.keyed_prefix(&keyed), &tag));
/// ```
pub fn mac_matches(mac: HmacSha512, tag: &[u8; MAC_LEN]) -> bool {
    macs_equal(&mac.finalize().into_bytes().into(), tag)
}

/// Whether two MACs are equal, in constant time: the comparison the verifier makes. They are
/// compared as eight 64-bit words with `subtle`, each word's result through its optimisation
/// barrier; `hmac`'s `Mac::verify_slice` does the same for each of the 64 bytes, which costs
/// about 760 instructions more a comparison.
///
/// ```
/// use armor_psk::psk::{macs_equal, MAC_LEN};
///
/// let mac = [7u8; MAC_LEN];
/// let mut forged = mac;
/// forged[63] ^= 1;
/// assert!(macs_equal(&mac, &mac));
/// assert!(!macs_equal(&mac, &forged));
/// ```
pub fn macs_equal(computed: &[u8; MAC_LEN], sent: &[u8; MAC_LEN]) -> bool {
    use subtle::ConstantTimeEq;
    let words = |tag: &[u8; MAC_LEN]| -> [u64; MAC_LEN / 8] {
        std::array::from_fn(|i| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&tag[i * 8..i * 8 + 8]);
            u64::from_ne_bytes(word)
        })
    };
    words(computed)[..].ct_eq(&words(sent)[..]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(secret: &str) -> HmacSha512 {
        HmacSha512::new_from_slice(secret.as_bytes()).unwrap()
    }

    const PARTS: SigningString<'static> = SigningString {
        key_id: "key",
        method: "POST",
        path: "/accounts/2",
        nonce: "n1",
        timestamp: 1528140529,
    };

    #[test]
    fn text_joins_the_parts_without_separators() {
        assert_eq!(
            PARTS.to_text::<&[u8]>(BodyForm::Empty, &[]),
            "keyPOST/accounts/2n11528140529"
        );
        assert_eq!(
            PARTS.to_text(BodyForm::Raw, &[&b"{\"a\""[..], b":1}"]),
            "keyPOST/accounts/2n11528140529{\"a\":1}"
        );
        // base64(SHA-512("")) is a well-known value.
        assert!(PARTS
            .to_text::<&[u8]>(BodyForm::Digest, &[])
            .ends_with("z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg=="));
    }

    #[test]
    fn chunking_does_not_change_the_mac() {
        let key = keyed("secret");
        for form in BodyForm::ALL {
            let whole = PARTS.sign(&key, form, &[b"hello world"]);
            let split = PARTS.sign(&key, form, &[&b"hello"[..], b"", b" world"]);
            assert_eq!(whole, split, "{form}");
        }
    }

    #[test]
    fn a_tag_differing_in_any_bit_does_not_match() {
        let tag: [u8; MAC_LEN] = std::array::from_fn(|i| (i * 7) as u8);
        assert!(macs_equal(&tag, &tag));
        for bit in 0..MAC_LEN * 8 {
            let mut other = tag;
            other[bit / 8] ^= 1 << (bit % 8);
            assert!(!macs_equal(&tag, &other), "bit {bit}");
        }
    }

    #[test]
    fn verify_finds_the_form_that_signed() {
        let key = keyed("secret");
        let body = [b"{}"];
        for form in BodyForm::ALL {
            let tag = PARTS.sign(&key, form, &body);
            assert_eq!(
                verify_forms(&key, &PARTS, BodyForms::ALL, &body, &tag),
                Some(form)
            );
            let others = BodyForms::ALL.without(form);
            assert_eq!(verify_forms(&key, &PARTS, others, &body, &tag), None);
        }
        let tag = PARTS.sign(&keyed("other"), BodyForm::Digest, &body);
        assert_eq!(
            verify_forms(&key, &PARTS, BodyForms::ALL, &body, &tag),
            None
        );
    }

    #[test]
    fn an_empty_body_signed_raw_or_empty_is_reported_as_empty() {
        let key = keyed("secret");
        let none: [&[u8]; 0] = [];
        let tag = PARTS.sign(&key, BodyForm::Raw, &none);
        assert_eq!(
            verify_forms(&key, &PARTS, BodyForms::ALL, &none, &tag),
            Some(BodyForm::Empty)
        );
        let raw_only = BodyForms::only(BodyForm::Raw);
        assert_eq!(
            verify_forms(&key, &PARTS, raw_only, &none, &tag),
            Some(BodyForm::Raw)
        );
        let digest = PARTS.sign(&key, BodyForm::Digest, &none);
        assert_eq!(
            verify_forms(&key, &PARTS, BodyForms::ALL, &none, &digest),
            Some(BodyForm::Digest)
        );
        assert_eq!(verify_forms(&key, &PARTS, raw_only, &none, &digest), None);
    }

    #[test]
    fn body_forms_set_operations() {
        assert_eq!(BodyForms::ALL.iter().count(), 3);
        assert!(BodyForms::NONE.is_empty());
        let set: BodyForms = [BodyForm::Raw, BodyForm::Empty].into_iter().collect();
        assert_eq!(set, BodyForms::ALL.without(BodyForm::Digest));
        assert_eq!("DIGEST".parse::<BodyForm>(), Ok(BodyForm::Digest));
        assert!("sha512".parse::<BodyForm>().is_err());
    }
}

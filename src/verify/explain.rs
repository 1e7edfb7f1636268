use bytes::Bytes;
use http::request::Parts;

use super::VerifyPskLayer;
use crate::psk::{signed_path, ArmorPsk, BodyForm, Credential, SigningString};

/// The signing string the verifier computes for one body form, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningStringFor {
    /// The body form.
    pub form: BodyForm,
    /// `keyId + METHOD + path + nonce + timestamp + bodyPart`, with raw body bytes that are not
    /// UTF-8 replaced.
    pub signing_string: String,
}

impl VerifyPskLayer {
    /// The signing strings this layer computes for a request: see [`ArmorPsk::explain`].
    pub fn explain(&self, parts: &Parts, body: &Bytes) -> Option<Vec<SigningStringFor>> {
        self.scheme().explain(parts, body)
    }
}

impl ArmorPsk {
    /// The signing strings the verifier computes for a request, one per body form it tries, so
    /// that a client author can see which part differs from theirs (as S3 returns its
    /// StringToSign). Neither the secret nor the expected MAC is part of them. `None` when the
    /// request carries no well-formed ARMOR-PSK credential.
    ///
    /// For diagnostics (a test double, a development server): in production, a `bad_signature`
    /// answer should not teach a caller what the server expects.
    pub fn explain(&self, parts: &Parts, body: &Bytes) -> Option<Vec<SigningStringFor>> {
        let header = parts.headers.get(http::header::AUTHORIZATION)?;
        let credential = Credential::parse_bytes(header.as_bytes()).ok()?;
        let signing = SigningString {
            key_id: credential.key_id(),
            method: parts.method.as_str(),
            path: signed_path(parts),
            nonce: credential.nonce(),
            timestamp: credential.timestamp(),
        };
        let forms = self.accepted_forms(!body.is_empty());
        Some(
            forms
                .iter()
                .map(|form| SigningStringFor {
                    form,
                    signing_string: signing.to_text(form, &[body]),
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_store::MemoryKeyStore;

    #[test]
    fn explains_each_form_tried_without_the_secret() {
        let layer = VerifyPskLayer::new(MemoryKeyStore::default());
        let signer = crate::Signer::new("key", "the-secret").unwrap();
        let header = signer
            .authorization_with(&http::Method::POST, "/a", b"{}", "n1", 1_700_000_000)
            .unwrap();
        let (parts, ()) = http::Request::post("/a?q=1")
            .header("authorization", header.clone())
            .body(())
            .unwrap()
            .into_parts();
        let explained = layer.explain(&parts, &Bytes::from_static(b"{}")).unwrap();
        let forms: Vec<_> = explained.iter().map(|e| e.form).collect();
        assert_eq!(forms, [BodyForm::Digest, BodyForm::Raw]);
        assert_eq!(explained[1].signing_string, "keyPOST/an11700000000{}");
        let all = format!("{explained:?}");
        assert!(!all.contains("the-secret"));
        let mac = header
            .to_str()
            .unwrap()
            .split(':')
            .nth(1)
            .unwrap()
            .to_owned();
        assert!(!all.contains(&mac));
    }
}

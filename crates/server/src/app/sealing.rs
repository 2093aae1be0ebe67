//! Secrets kept in the database sealed with ChaCha20-Poly1305 under a key
//! derived from a configured secret: the private keys that sign offline
//! tokens and the webhook endpoints' signing secrets. Each use derives its
//! own key (a `purpose` label), and the row's id is the associated data, so
//! a sealed value cannot be moved to another row or another use.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::SealingSecret;

/// The 32-byte key of one purpose, derived from the configured secret.
fn key(secret: &SealingSecret, purpose: &str) -> chacha20poly1305::Key {
    let mut h = Sha256::new();
    h.update(purpose.as_bytes());
    h.update(b"\0");
    h.update(secret.expose().as_bytes());
    h.finalize()
}

/// `plain` sealed for `purpose` and the row `id`: base64 of nonce and
/// ciphertext. `None` only if the cipher refuses (it does not for these sizes).
pub(crate) fn seal(secret: &SealingSecret, purpose: &str, id: &str, plain: &[u8]) -> Option<String> {
    let cipher = ChaCha20Poly1305::new(&key(secret, purpose));
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let sealed = cipher
        .encrypt(
            (&nonce).into(),
            Payload {
                msg: plain,
                aad: id.as_bytes(),
            },
        )
        .ok()?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Some(STANDARD.encode(out))
}

/// What [`seal`] sealed, or `None` when another secret, purpose or row
/// sealed it, or the text was altered.
pub(crate) fn unseal(secret: &SealingSecret, purpose: &str, id: &str, sealed: &str) -> Option<Vec<u8>> {
    let bytes = STANDARD.decode(sealed).ok()?;
    if bytes.len() < 12 {
        return None;
    }
    let (nonce, body) = bytes.split_at(12);
    let cipher = ChaCha20Poly1305::new(&key(secret, purpose));
    cipher
        .decrypt(
            nonce.into(),
            Payload {
                msg: body,
                aad: id.as_bytes(),
            },
        )
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_secret_purpose_and_row() {
        let s = SealingSecret::new("a".repeat(40)).unwrap();
        let other = SealingSecret::new("b".repeat(40)).unwrap();
        let sealed = seal(&s, "p1", "row1", b"hello").unwrap();
        assert_eq!(unseal(&s, "p1", "row1", &sealed).as_deref(), Some(&b"hello"[..]));
        assert_eq!(unseal(&other, "p1", "row1", &sealed), None);
        assert_eq!(unseal(&s, "p2", "row1", &sealed), None);
        assert_eq!(unseal(&s, "p1", "row2", &sealed), None);
        assert_eq!(unseal(&s, "p1", "row1", "not base64!"), None);
    }
}

//! ES256 signatures (ECDSA P-256 with SHA-256) for the manifests difflog
//! signs, made with ring's assembly P-256 instead of the CAI crate's
//! pure-Rust one: the same signature format (r ‖ s, 64 bytes), several
//! times faster (issue 36's cost goal). Everything but the signature — the
//! certificates, the reserved size — is the CAI crate's own signer's.

/// A C2PA signer whose ES256 signatures ring makes.
pub(crate) struct Es256 {
    /// The CAI crate's signer of the same key and chain.
    inner: c2pa::BoxedSigner,
    key: ring::signature::EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
}

impl Es256 {
    /// `inner` (a signer of `key_pem`, a PKCS#8 PEM key) signing through
    /// ring when it signs ES256 and ring takes the key; else `inner` as it
    /// is.
    pub(crate) fn wrap(inner: c2pa::BoxedSigner, key_pem: &str) -> c2pa::BoxedSigner {
        if inner.alg() != c2pa::SigningAlg::Es256 {
            return inner;
        }
        let rng = ring::rand::SystemRandom::new();
        let key = pkcs8_der(key_pem).and_then(|der| {
            ring::signature::EcdsaKeyPair::from_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &der,
                &rng,
            )
            .ok()
        });
        match key {
            Some(key) => Box::new(Es256 { inner, key, rng }),
            None => inner,
        }
    }
}

/// The DER of a PEM `PRIVATE KEY` (PKCS#8) block.
fn pkcs8_der(pem: &str) -> Option<Vec<u8>> {
    pem::parse_many(pem)
        .ok()?
        .into_iter()
        .find(|block| block.tag() == "PRIVATE KEY")
        .map(pem::Pem::into_contents)
}

impl c2pa::Signer for Es256 {
    fn sign(&self, data: &[u8]) -> c2pa::Result<Vec<u8>> {
        self.key
            .sign(&self.rng, data)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| c2pa::Error::CoseSignature)
    }

    fn alg(&self) -> c2pa::SigningAlg {
        c2pa::SigningAlg::Es256
    }

    fn certs(&self) -> c2pa::Result<Vec<Vec<u8>>> {
        self.inner.certs()
    }

    fn reserve_size(&self) -> usize {
        self.inner.reserve_size()
    }

    fn ocsp_val(&self) -> Option<Vec<u8>> {
        self.inner.ocsp_val()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_takes_a_pkcs8_pem_key_and_nothing_else() {
        let rng = ring::rand::SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let der = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let block = pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref()));
        let read = pkcs8_der(&block).unwrap();
        assert_eq!(read, der.as_ref());
        assert!(ring::signature::EcdsaKeyPair::from_pkcs8(alg, &read, &rng).is_ok());
        assert_eq!(
            pkcs8_der(&block.replace("PRIVATE KEY", "EC PRIVATE KEY")),
            None
        );
        assert_eq!(pkcs8_der("not a key"), None);
    }
}

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

/// The DER of a PEM `PRIVATE KEY` block.
fn pkcs8_der(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let body = pem
        .split("-----BEGIN PRIVATE KEY-----")
        .nth(1)?
        .split("-----END PRIVATE KEY-----")
        .next()?;
    let text: String = body.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(text).ok()
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

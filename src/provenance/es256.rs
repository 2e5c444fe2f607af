//! ES256 signatures (ECDSA P-256 with SHA-256) for the manifests difflog
//! signs, made with ring's assembly P-256 instead of the CAI crate's
//! pure-Rust one: the same signature format (r ‖ s, 64 bytes), several
//! times faster (issue 36's cost goal).
//!
//! The COSE_Sign1 around the signature is made here too (the CAI crate's
//! `direct_cose_handling`), as the CAI crate makes it for a claim of
//! version 2 with no time-stamp: the protected header (ES256 and the
//! certificate chain) encoded once, the payload (the claim) detached, and
//! the unprotected header's `pad` that fills the signature box to the
//! signer's reserved size. The CAI crate's own path re-checks the signing
//! certificate's profile, parses it twice and serialises the whole
//! structure again for every byte of padding it tries, on every image; its
//! profile check is made once instead, by the test manifest that
//! [`super::sign::Signing::new`] signs and reads back.

/// COSE's algorithm number of ES256.
const ES256: u8 = 0x26; // −7 as CBOR: major type 1, argument 6.
/// COSE's header label of the certificate chain (`x5chain`).
const X5CHAIN: u8 = 33;

/// A C2PA signer whose ES256 signatures ring makes, inside a COSE_Sign1
/// made here.
pub(crate) struct Es256 {
    /// The CAI crate's signer of the same key and chain.
    inner: c2pa::BoxedSigner,
    key: ring::signature::EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
    /// The protected header, encoded: `{1: ES256, 33: the chain}`.
    protected: Vec<u8>,
    /// The size every signature box is made to.
    reserve: usize,
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
        let (Some(key), Ok(certs)) = (key, inner.certs()) else {
            return inner;
        };
        // The envelope made here holds neither an OCSP response nor a
        // time-stamp; a signer with either signs as the CAI crate does.
        if certs.is_empty() || inner.ocsp_val().is_some() || inner.time_authority_url().is_some() {
            return inner;
        }
        let reserve = inner.reserve_size();
        Box::new(Es256 {
            inner,
            key,
            rng,
            protected: protected_header(&certs),
            reserve,
        })
    }
}

/// The bytes a CBOR head of argument `n` takes (its shortest form).
fn head_len(n: usize) -> usize {
    match n {
        0..=23 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// A CBOR head: major type `major`, argument `n`, in [`head_len`]'s form.
fn head(out: &mut Vec<u8>, major: u8, n: usize) {
    let m = major << 5;
    match head_len(n) {
        1 => out.push(m | n as u8),
        2 => out.extend([m | 24, n as u8]),
        3 => {
            out.push(m | 25);
            out.extend((n as u16).to_be_bytes());
        }
        5 => {
            out.push(m | 26);
            out.extend((n as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend((n as u64).to_be_bytes());
        }
    }
}

/// A CBOR byte string.
fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    head(out, 2, b.len());
    out.extend_from_slice(b);
}

/// A CBOR text string.
fn text(out: &mut Vec<u8>, t: &str) {
    head(out, 3, t.len());
    out.extend_from_slice(t.as_bytes());
}

/// The protected header `{1: ES256, 33: chain}`: one certificate as a byte
/// string, more as an array of them (as the CAI crate writes it).
fn protected_header(certs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![0xa2, 0x01, ES256, 0x18, X5CHAIN];
    match certs {
        [one] => bytes(&mut out, one),
        _ => {
            head(&mut out, 4, certs.len());
            for c in certs {
                bytes(&mut out, c);
            }
        }
    }
    out
}

/// What an ES256 signature signs: the COSE `Sig_structure` of a
/// COSE_Sign1 with this protected header, no external data and `payload`.
fn to_be_signed(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(protected.len() + payload.len() + 32);
    out.push(0x84);
    text(&mut out, "Signature1");
    bytes(&mut out, protected);
    bytes(&mut out, &[]);
    bytes(&mut out, payload);
    out
}

/// The tagged COSE_Sign1 `[protected, {"pad": …}, nil, signature]` of
/// exactly `size` bytes (a second pad, `pad2`, where the first alone
/// cannot make that size: its head grows by a byte at 24 and 256), or
/// `None` when even no padding is too large.
fn sign1(protected: &[u8], signature: &[u8], size: usize) -> Option<Vec<u8>> {
    let fixed = 2
        + head_len(protected.len())
        + protected.len()
        + 1
        + head_len(signature.len())
        + signature.len();
    // The map's own head, "pad", and (if any) "pad2".
    let (one, two) = (1 + 4, 1 + 4 + 5);
    let fits = |room: usize| {
        (1..=9).find_map(|h| {
            let n = room.checked_sub(h)?;
            (head_len(n) == h).then_some(n)
        })
    };
    let pads: Vec<(&str, usize)> = match size.checked_sub(fixed + one).and_then(fits) {
        Some(n) => vec![("pad", n)],
        None => {
            let room = size.checked_sub(fixed + two)?;
            // pad2 of 0 – 23 bytes (a one-byte head) leaves pad a size it
            // can take.
            (0..24).find_map(|b: usize| {
                let a = fits(room.checked_sub(1 + b)?)?;
                Some(vec![("pad", a), ("pad2", b)])
            })?
        }
    };
    let mut out = Vec::with_capacity(size);
    out.extend([0xd2, 0x84]);
    bytes(&mut out, protected);
    head(&mut out, 5, pads.len());
    for (label, n) in pads {
        text(&mut out, label);
        head(&mut out, 2, n);
        out.resize(out.len() + n, 0);
    }
    out.push(0xf6);
    bytes(&mut out, signature);
    (out.len() == size).then_some(out)
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
    /// The whole COSE_Sign1 of the claim `data` (see the module comment).
    fn sign(&self, data: &[u8]) -> c2pa::Result<Vec<u8>> {
        let tbs = to_be_signed(&self.protected, data);
        let signature = self
            .key
            .sign(&self.rng, &tbs)
            .map_err(|_| c2pa::Error::CoseSignature)?;
        sign1(&self.protected, signature.as_ref(), self.reserve)
            .ok_or(c2pa::Error::CoseSigboxTooSmall)
    }

    fn alg(&self) -> c2pa::SigningAlg {
        c2pa::SigningAlg::Es256
    }

    fn certs(&self) -> c2pa::Result<Vec<Vec<u8>>> {
        self.inner.certs()
    }

    fn reserve_size(&self) -> usize {
        self.reserve
    }

    fn ocsp_val(&self) -> Option<Vec<u8>> {
        // The envelope made here has no room for an OCSP response; a
        // signer from files has none to give (checked when wrapped).
        None
    }

    fn direct_cose_handling(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coset::{CborSerializable, TaggedCborSerializable};

    #[test]
    fn the_envelope_is_a_cose_sign1_of_the_reserved_size_that_verifies() {
        let rng = ring::rand::SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let der = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(alg, der.as_ref(), &rng).unwrap();
        let claim = b"a claim's CBOR".to_vec();
        for certs in [vec![vec![7u8; 300]], vec![vec![1u8; 500], vec![2u8; 20]]] {
            let protected = protected_header(&certs);
            let tbs = to_be_signed(&protected, &claim);
            let signature = key.sign(&rng, &tbs).unwrap();
            let least = sign1(&protected, signature.as_ref(), 0);
            assert_eq!(least, None, "no room is too small");
            // Every size from the least that fits, across the pad's head
            // growing at 24 and 256 bytes, and a large one.
            let fixed = 2 + head_len(protected.len()) + protected.len() + 1 + 2 + 64;
            let sizes = (fixed..fixed + 300).chain([fixed + 70_000]);
            let mut made = 0;
            for size in sizes {
                let Some(cose) = sign1(&protected, signature.as_ref(), size) else {
                    assert!(size < fixed + 6, "{size} bytes could be made");
                    continue;
                };
                made += 1;
                assert_eq!(cose.len(), size);
                let s = coset::CoseSign1::from_tagged_slice(&cose).unwrap();
                assert_eq!(
                    s.protected.header.alg,
                    Some(coset::Algorithm::Assigned(coset::iana::Algorithm::ES256))
                );
                let chain = &s.protected.header.rest;
                assert_eq!(chain.len(), 1);
                assert_eq!(chain[0].0, coset::Label::Int(33));
                let want = match &certs[..] {
                    [one] => coset::cbor::value::Value::Bytes(one.clone()),
                    _ => coset::cbor::value::Value::Array(
                        certs
                            .iter()
                            .cloned()
                            .map(coset::cbor::value::Value::Bytes)
                            .collect(),
                    ),
                };
                assert_eq!(chain[0].1, want);
                assert_eq!(s.payload, None);
                for (label, v) in &s.unprotected.rest {
                    assert!([
                        coset::Label::Text("pad".into()),
                        coset::Label::Text("pad2".into())
                    ]
                    .contains(label));
                    assert!(
                        matches!(v, coset::cbor::value::Value::Bytes(b) if b.iter().all(|&x| x == 0))
                    );
                }
                // The signature verifies over the Sig_structure as a reader
                // makes it from the parsed envelope and the detached claim.
                let tbs = s.tbs_detached_data(&claim, b"");
                let public = ring::signature::UnparsedPublicKey::new(
                    &ring::signature::ECDSA_P256_SHA256_FIXED,
                    ring::signature::KeyPair::public_key(&key).as_ref(),
                );
                public.verify(&tbs, &s.signature).unwrap();
                assert!(public
                    .verify(&s.tbs_detached_data(b"another claim", b""), &s.signature)
                    .is_err());
                // coset writes the same protected header it read.
                assert_eq!(s.protected.original_data.as_deref(), Some(&protected[..]));
                assert!(s.protected.header.clone().to_vec().is_ok());
            }
            assert!(made >= 290, "only {made} sizes were made");
        }
    }

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

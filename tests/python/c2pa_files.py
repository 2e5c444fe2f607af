"""Images with Content Credentials signed by the CAI's own SDK (c2pa-python
0.38.1, which carries c2pa-rs 0.91.3), under a test CA made here with
`cryptography` to the certificate profile C2PA asks for (an ECDSA P-256
root; a leaf with the e-mail-protection extended key use, as the CAI's own
test certificates have — c2pa-python's default list refuses the
document-signing one —, digital-signature key use and both key
identifiers), with no time-stamp server: what a generator signing offline
makes. Then prints, per file, what c2pa-python
reads back with this CA's root as the only trust anchor (the oracle).

Files: a created PNG, JPEG and WebP (`c2pa.created`, IPTC's
trainedAlgorithmicMedia); a PNG edited from the signed JPEG (its parent
ingredient, with credentials of its own); the created PNG with one pixel
byte changed afterwards (its chunk's CRC made right again, so only the
hash binding can tell). Writes `root.pem` (the anchor) and
`other-root.pem` (a CA that signed none of them).

    usage: python c2pa_files.py OUT_DIR
"""

import datetime
import io
import json
import os
import struct
import sys
import zlib

import c2pa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from PIL import Image

NOW = datetime.datetime.now(datetime.timezone.utc)
PEM = serialization.Encoding.PEM


def name(org, cn):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def usage(**on):
    keys = ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
            "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"]
    return x509.KeyUsage(**{k: on.get(k, False) for k in keys})


def root(org):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name(org, f"{org} Root CA")).issuer_name(name(org, f"{org} Root CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1)).not_valid_after(NOW + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(usage(key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def leaf(ca_key, ca_cert, org, cn):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name(org, cn)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1)).not_valid_after(NOW + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(digital_signature=True, content_commitment=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pkcs8 = key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(PEM), pkcs8


def picture(fmt, color):
    out = io.BytesIO()
    img = Image.new("RGB", (48, 32), color)
    img.putpixel((3, 4), (255, 255, 255))
    img.save(out, format=fmt)
    return out.getvalue()


def sign(signer_info, src, mime, title, parent=None):
    manifest = {"title": title, "claim_generator_info": [{"name": "Image Creator", "version": "2.1"}]}
    with c2pa.Builder(manifest) as builder:
        if parent is None:
            builder.set_intent(c2pa.C2paBuilderIntent.CREATE,
                               c2pa.C2paDigitalSourceType.TRAINED_ALGORITHMIC_MEDIA)
        else:
            parent_bytes, parent_mime, parent_title = parent
            builder.add_ingredient({"title": parent_title, "relationship": "parentOf"}, parent_mime,
                                   io.BytesIO(parent_bytes))
            builder.set_intent(c2pa.C2paBuilderIntent.EDIT)
        dest = io.BytesIO()
        with c2pa.Signer.from_info(signer_info) as signer:
            builder.sign(signer, mime, io.BytesIO(src), dest)
        return dest.getvalue()


def tamper(png):
    """One byte of the first IDAT chunk's data changed, its CRC set right."""
    at = 8
    while at < len(png):
        length, kind = struct.unpack(">I4s", png[at:at + 8])
        if kind == b"IDAT":
            data = bytearray(png[at + 8:at + 8 + length])
            data[len(data) // 2] ^= 0x01
            crc = struct.pack(">I", zlib.crc32(kind + bytes(data)))
            return png[:at + 8] + bytes(data) + crc + png[at + 12 + length:]
        at += 12 + length
    raise ValueError("no IDAT")


def oracle(data, anchors):
    settings = c2pa.Settings.from_dict({"trust": {"trust_anchors": anchors},
                                        "verify": {"remote_manifest_fetch": False}})
    with c2pa.Reader(io.BytesIO(data), context=c2pa.Context(settings=settings)) as reader:
        store = json.loads(reader.json())
    m = store["manifests"][store["active_manifest"]]
    actions = []
    for a in m.get("assertions", []):
        if a["label"].startswith("c2pa.actions"):
            actions += [[x["action"], x.get("digitalSourceType")] for x in a["data"]["actions"]]
    failures = store.get("validation_results", {}).get("activeManifest", {}).get("failure", [])
    sig = m.get("signature_info", {})
    return {
        "state": store["validation_state"].lower(),
        "failures": sorted(f["code"] for f in failures),
        "title": m.get("title"),
        "claim_generator": [g["name"] for g in m.get("claim_generator_info", [])],
        "actions": actions,
        "ingredients": [[i.get("title"), i.get("relationship"), "active_manifest" in i]
                        for i in m.get("ingredients", [])],
        "issuer": sig.get("issuer"),
        "common_name": sig.get("common_name"),
        "alg": sig.get("alg"),
    }


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    ca_key, ca_cert = root("Difflog Test")
    _, other = root("Somebody Else")
    anchors = ca_cert.public_bytes(PEM).decode()
    with open(os.path.join(out, "root.pem"), "w") as f:
        f.write(anchors)
    with open(os.path.join(out, "other-root.pem"), "w") as f:
        f.write(other.public_bytes(PEM).decode())
    chain, key = leaf(ca_key, ca_cert, "Difflog Test", "Image Creator signer")
    info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain, key, None)
    files = {}
    for ext, fmt, mime in (("png", "PNG", "image/png"), ("jpg", "JPEG", "image/jpeg"),
                           ("webp", "WEBP", "image/webp")):
        files[f"created.{ext}"] = sign(info, picture(fmt, (30, 90, 160)), mime, f"created.{ext}")
    files["edited.png"] = sign(info, picture("PNG", (160, 90, 30)), "image/png", "edited.png",
                               parent=(files["created.jpg"], "image/jpeg", "created.jpg"))
    files["tampered.png"] = tamper(files["created.png"])
    for file, data in files.items():
        with open(os.path.join(out, file), "wb") as f:
            f.write(data)
        print(json.dumps(dict(oracle(data, anchors), file=file)))


if __name__ == "__main__":
    main()

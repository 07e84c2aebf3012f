//! Encryption at rest: every stored value sealed with AES-256-GCM (RustCrypto `aes-gcm`), bound
//! to the record it belongs to.
//!
//! ```text
//! sealed = 0x03            header byte (SEALED): never the first byte of JSON text, of a compact
//!                          value (0x01) or of a verbatim one (0x02); a plain value that begins
//!                          with it is stored behind 0x02 (see codec::store_form)
//!          0x02            format version (0x01: the same without the version in the aad,
//!                          written before versions were bound; still opened)
//!          key id (4)      first 4 bytes of SHA-256("wa-auth-store key id\0" || key): names the
//!                          key, reveals nothing of it
//!          nonce (12)      random per seal (the operating system's CSPRNG, getrandom)
//!          ciphertext (n)  of the value's stored form (compact, verbatim or JSON text)
//!          tag (16)        GCM authentication tag
//! aad    = the 6 header bytes || u32be(len sid) sid || u32be(len type) type || id
//!          || u64be(version)  (format 0x02: the version of the write that sealed it)
//!          (type "\0creds" for the creds: no key type can hold a control character)
//! ```
//!
//! The version binds a sealed value to the write that made it: an older sealed copy of the same
//! record put back in place (an old backup's row with the current version, a replayed Redis
//! value) fails to open instead of being served as current.
//!
//! A value copied to another record (another session, type or id) fails to open, and so does
//! one sealed under a key the keyring does not hold: [`Error::Decrypt`], never garbage and never
//! "missing". Values without the header are plain (written before encryption was turned on) and
//! are returned as they are; they are sealed when next written.

use aes_gcm::aead::{AeadCore, AeadInOut, Generate, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::model::Value;

/// First byte of a sealed value.
pub const SEALED: u8 = 0x03;
/// The format this module writes: the version is part of the associated data.
const FORMAT: u8 = 0x02;
/// The format before versions were bound (opened, never written).
const FORMAT_UNVERSIONED: u8 = 0x01;
/// Bytes of the key id.
pub const KEY_ID_BYTES: usize = 4;
const HEADER: usize = 2 + KEY_ID_BYTES;
const NONCE: usize = 12;
const TAG: usize = 16;
/// Bytes a seal adds to a value.
pub const OVERHEAD: usize = HEADER + NONCE + TAG;
/// Bytes of an AES-256 key.
pub const KEY_BYTES: usize = 32;
/// The record type the creds are sealed under.
const CREDS_TYPE: &str = "\0creds";

/// Which record of a session a value belongs to (part of the associated data).
#[derive(Clone, Copy, Debug)]
pub enum Record<'a> {
    Creds,
    Key { kind: &'a str, id: &'a str },
}

/// Whether stored bytes are sealed.
pub fn is_sealed(stored: &[u8]) -> bool {
    stored.first() == Some(&SEALED)
}

/// The key id of a key: names it in headers and in `Debug`, never the key itself.
pub fn key_id(key: &[u8]) -> [u8; KEY_ID_BYTES] {
    let mut h = Sha256::new();
    h.update(b"wa-auth-store key id\0");
    h.update(key);
    let digest = h.finalize();
    let mut id = [0u8; KEY_ID_BYTES];
    id.copy_from_slice(&digest[..KEY_ID_BYTES]);
    id
}

fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

struct SealKey {
    id: [u8; KEY_ID_BYTES],
    cipher: Aes256Gcm,
}

/// The key values are sealed under, and older keys they may still be sealed under (rotation).
pub struct Keyring {
    current: SealKey,
    previous: Vec<SealKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("key_id", &hex(&self.current.id))
            .field(
                "previous_key_ids",
                &self.previous.iter().map(|k| hex(&k.id)).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn seal_key(key: &[u8], what: &str) -> Result<SealKey> {
    if key.len() != KEY_BYTES {
        return Err(Error::Config(format!(
            "{what} must be {KEY_BYTES} bytes (AES-256), got {} bytes",
            key.len()
        )));
    }
    let cipher = Aes256Gcm::new_from_slice(key)
        .map_err(|_| Error::Config(format!("{what} is not a usable AES-256 key")))?;
    Ok(SealKey {
        id: key_id(key),
        cipher,
    })
}

impl Keyring {
    /// `current` seals; `previous` (and `current`) open. Each key is 32 bytes.
    pub fn new(current: &[u8], previous: &[&[u8]]) -> Result<Self> {
        let current = seal_key(current, "the encryption key")?;
        let mut kept: Vec<SealKey> = Vec::with_capacity(previous.len());
        for key in previous {
            let k = seal_key(key, "a previous encryption key")?;
            if k.id == current.id || kept.iter().any(|p| p.id == k.id) {
                continue; // the same key twice (its id is derived from it)
            }
            kept.push(k);
        }
        Ok(Keyring {
            current,
            previous: kept,
        })
    }

    /// The id of the key values are sealed under.
    pub fn key_id(&self) -> [u8; KEY_ID_BYTES] {
        self.current.id
    }

    /// Seals `plain`, the stored form of the value of `record` in session `sid`, written at
    /// `version`.
    pub fn seal(
        &self,
        sid: &str,
        record: Record<'_>,
        version: u64,
        plain: &[u8],
    ) -> Result<Vec<u8>> {
        let nonce = Nonce::<<Aes256Gcm as AeadCore>::NonceSize>::try_generate().map_err(|_| {
            Error::Config("the operating system's random number generator failed".into())
        })?;
        let mut out = Vec::with_capacity(OVERHEAD + plain.len());
        out.push(SEALED);
        out.push(FORMAT);
        out.extend_from_slice(&self.current.id);
        out.extend_from_slice(&nonce);
        let aad = associated_data(&out[..HEADER], sid, record, Some(version));
        out.extend_from_slice(plain);
        let tag = self
            .current
            .cipher
            .encrypt_inout_detached(&nonce, &aad, (&mut out[HEADER + NONCE..]).into())
            .map_err(|_| Error::invalid("a value is too large to encrypt"))?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Opens a sealed value of `record` stored at `version`: its stored form, or
    /// [`Error::Decrypt`].
    pub fn open(
        &self,
        sid: &str,
        record: Record<'_>,
        version: u64,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        if sealed.len() < OVERHEAD || sealed[0] != SEALED {
            return Err(Error::Decrypt(format!(
                "{} is not a sealed value (too short or no header)",
                describe(record)
            )));
        }
        if sealed[1] != FORMAT && sealed[1] != FORMAT_UNVERSIONED {
            return Err(Error::Decrypt(format!(
                "{} is sealed in an unknown format ({}); a newer version of wa-auth-store wrote it",
                describe(record),
                sealed[1]
            )));
        }
        let id = &sealed[2..HEADER];
        let Some(key) = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
        else {
            return Err(Error::Decrypt(format!(
                "{} is sealed under key id {}, which is neither the encryption key ({}) nor one of previousKeys",
                describe(record),
                hex(id),
                hex(&self.current.id)
            )));
        };
        let nonce =
            Nonce::<<Aes256Gcm as AeadCore>::NonceSize>::try_from(&sealed[HEADER..HEADER + NONCE])
                .map_err(|_| Error::Decrypt("a sealed value has a malformed nonce".into()))?;
        let body = &sealed[HEADER + NONCE..sealed.len() - TAG];
        let tag = aes_gcm::Tag::try_from(&sealed[sealed.len() - TAG..])
            .map_err(|_| Error::Decrypt("a sealed value has a malformed tag".into()))?;
        let bound = (sealed[1] == FORMAT).then_some(version);
        let aad = associated_data(&sealed[..HEADER], sid, record, bound);
        let mut plain = body.to_vec();
        key.cipher
            .decrypt_inout_detached(&nonce, &aad, plain.as_mut_slice().into(), &tag)
            .map_err(|_| {
                Error::Decrypt(format!(
                    "{} did not open under key id {}: it was altered, copied from another record, or put back from an older write",
                    describe(record),
                    hex(id)
                ))
            })?;
        Ok(plain)
    }
}

fn describe(record: Record<'_>) -> String {
    match record {
        Record::Creds => "the session's creds".into(),
        Record::Key { kind, .. } => format!("a '{kind}' record"),
    }
}

fn associated_data(header: &[u8], sid: &str, record: Record<'_>, version: Option<u64>) -> Vec<u8> {
    let (kind, id) = match record {
        Record::Creds => (CREDS_TYPE, ""),
        Record::Key { kind, id } => (kind, id),
    };
    let mut aad = Vec::with_capacity(header.len() + 8 + sid.len() + kind.len() + id.len());
    aad.extend_from_slice(header);
    for part in [sid, kind] {
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad.extend_from_slice(id.as_bytes());
    if let Some(v) = version {
        aad.extend_from_slice(&v.to_be_bytes());
    }
    aad
}

/// Stored bytes as the plain stored form: opened with `keys` when sealed, as they are when not
/// (written before encryption was turned on). Sealed bytes and no keyring: [`Error::Decrypt`].
/// `version`: the version the tier stores the value at.
pub fn reveal(
    keys: Option<&Keyring>,
    sid: &str,
    record: Record<'_>,
    version: u64,
    stored: Value,
) -> Result<Value> {
    if !is_sealed(&stored) {
        return Ok(stored);
    }
    match keys {
        Some(k) => Ok(Value::from(k.open(sid, record, version, &stored)?)),
        None => Err(Error::Decrypt(format!(
            "{} is encrypted and this store has no encryption key (pass the encryption option)",
            describe(record)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: [u8; 32] = [7; 32];
    const K2: [u8; 32] = [9; 32];
    const PRE_KEY: Record<'static> = Record::Key {
        kind: "pre-key",
        id: "12",
    };

    fn ring(current: &[u8], previous: &[&[u8]]) -> Keyring {
        Keyring::new(current, previous).unwrap()
    }

    #[test]
    fn seals_and_opens_with_the_layout_documented() {
        let k = ring(&K1, &[]);
        let plain = b"\x01compact bytes";
        let s = k.seal("s1", PRE_KEY, 7, plain).unwrap();
        assert_eq!(s.len(), plain.len() + OVERHEAD);
        assert_eq!(s[0], SEALED);
        assert_eq!(s[1], 0x02);
        assert_eq!(&s[2..6], &key_id(&K1));
        assert!(!s.windows(plain.len() - 1).any(|w| w == &plain[1..]));
        assert_eq!(k.open("s1", PRE_KEY, 7, &s).unwrap(), plain);
        // a fresh nonce per seal
        let again = k.seal("s1", PRE_KEY, 7, plain).unwrap();
        assert_ne!(s[6..18], again[6..18]);
        assert_ne!(s, again);
        // empty values too
        let e = k.seal("s1", Record::Creds, 7, b"").unwrap();
        assert_eq!(k.open("s1", Record::Creds, 7, &e).unwrap(), b"");
    }

    #[test]
    fn any_altered_byte_fails_to_open() {
        let k = ring(&K1, &[]);
        let s = k.seal("s1", PRE_KEY, 7, b"{\"a\":1}").unwrap();
        for i in 0..s.len() {
            let mut t = s.clone();
            t[i] ^= 0x40;
            let e = k.open("s1", PRE_KEY, 7, &t).unwrap_err();
            assert_eq!(e.code(), "ERR_DECRYPT", "byte {i}");
        }
        for cut in [0, 1, OVERHEAD - 1, s.len() - 1] {
            assert_eq!(
                k.open("s1", PRE_KEY, 7, &s[..cut]).unwrap_err().code(),
                "ERR_DECRYPT"
            );
        }
    }

    #[test]
    fn a_value_of_another_record_fails_to_open() {
        let k = ring(&K1, &[]);
        let s = k.seal("s1", PRE_KEY, 7, b"x").unwrap();
        let others = [
            ("s2", PRE_KEY),
            (
                "s1",
                Record::Key {
                    kind: "pre-key",
                    id: "13",
                },
            ),
            (
                "s1",
                Record::Key {
                    kind: "session",
                    id: "12",
                },
            ),
            ("s1", Record::Creds),
            // the length prefixes keep the parts apart
            ("s1\0\0\0\u{7}pre-key", Record::Key { kind: "", id: "12" }),
            (
                "s",
                Record::Key {
                    kind: "1pre-key",
                    id: "12",
                },
            ),
        ];
        for (sid, rec) in others {
            assert_eq!(
                k.open(sid, rec, 7, &s).unwrap_err().code(),
                "ERR_DECRYPT",
                "{sid} {rec:?}"
            );
        }
        let c = k.seal("s1", Record::Creds, 7, b"x").unwrap();
        let creds_like = Record::Key {
            kind: "\0creds",
            id: "",
        };
        assert!(
            k.open("s1", creds_like, 7, &c).is_ok(),
            "the creds type is what the AAD names"
        );
        assert!(
            crate::ident::validate_type("\0creds").is_err(),
            "no key type can be it"
        );
    }

    #[test]
    fn wrong_key_fails_and_names_only_key_ids() {
        let s = ring(&K1, &[]).seal("s1", PRE_KEY, 7, b"x").unwrap();
        let e = ring(&K2, &[]).open("s1", PRE_KEY, 7, &s).unwrap_err();
        assert_eq!(e.code(), "ERR_DECRYPT");
        let msg = e.to_string();
        assert!(
            msg.contains(&hex(&key_id(&K1))) && msg.contains(&hex(&key_id(&K2))),
            "{msg}"
        );
        // a key with the same id but other bytes (forged header) fails on the tag
        let mut forged = ring(&K2, &[]).seal("s1", PRE_KEY, 7, b"x").unwrap();
        forged[2..6].copy_from_slice(&key_id(&K1));
        assert_eq!(
            ring(&K1, &[])
                .open("s1", PRE_KEY, 7, &forged)
                .unwrap_err()
                .code(),
            "ERR_DECRYPT"
        );
    }

    #[test]
    fn rotation_opens_values_of_previous_keys_and_seals_under_the_new_one() {
        let old = ring(&K1, &[]);
        let s = old.seal("s1", PRE_KEY, 7, b"v").unwrap();
        let rotated = ring(&K2, &[&K1]);
        assert_eq!(rotated.open("s1", PRE_KEY, 7, &s).unwrap(), b"v");
        let n = rotated.seal("s1", PRE_KEY, 7, b"v").unwrap();
        assert_eq!(&n[2..6], &key_id(&K2));
        assert!(old.open("s1", PRE_KEY, 7, &n).is_err());
        // previousKeys dropped: the old value no longer opens
        assert_eq!(
            ring(&K2, &[])
                .open("s1", PRE_KEY, 7, &s)
                .unwrap_err()
                .code(),
            "ERR_DECRYPT"
        );
        // the current key among the previous ones is harmless
        assert_eq!(ring(&K2, &[&K2, &K1, &K1]).previous.len(), 1);
    }

    #[test]
    fn legacy_plain_values_pass_and_sealed_ones_need_a_key() {
        let k = ring(&K1, &[]);
        for plain in [&b"{\"a\":1}"[..], b"\x01\x00", b"\x02\x01", b"", b" [1]"] {
            let v = reveal(Some(&k), "s1", PRE_KEY, 7, Value::from(plain)).unwrap();
            assert_eq!(&v[..], plain);
            assert_eq!(
                &reveal(None, "s1", PRE_KEY, 7, Value::from(plain)).unwrap()[..],
                plain
            );
        }
        let s = k.seal("s1", PRE_KEY, 7, b"v").unwrap();
        assert_eq!(
            &reveal(Some(&k), "s1", PRE_KEY, 7, Value::from(s.clone())).unwrap()[..],
            b"v"
        );
        let e = reveal(None, "s1", PRE_KEY, 7, Value::from(s)).unwrap_err();
        assert_eq!(e.code(), "ERR_DECRYPT");
    }

    #[test]
    fn keys_must_be_32_bytes_and_never_show() {
        assert_eq!(
            Keyring::new(&[1; 16], &[]).unwrap_err().code(),
            "ERR_CONFIG"
        );
        assert_eq!(
            Keyring::new(&K1, &[&[1; 31]]).unwrap_err().code(),
            "ERR_CONFIG"
        );
        let k = ring(&[0xAB; 32], &[&[0xCD; 32]]);
        let d = format!("{k:?}");
        assert!(
            !d.to_lowercase().contains("abab") && !d.to_lowercase().contains("cdcd"),
            "{d}"
        );
        assert!(d.contains(&hex(&key_id(&[0xAB; 32]))), "{d}");
    }

    #[test]
    fn a_value_sealed_at_another_version_fails_to_open() {
        let k = ring(&K1, &[]);
        let old = k.seal("s1", PRE_KEY, 7, b"old").unwrap();
        assert_eq!(k.open("s1", PRE_KEY, 7, &old).unwrap(), b"old");
        // put back in place under a later write's version: refused, never served as current
        let e = k.open("s1", PRE_KEY, 8, &old).unwrap_err();
        assert_eq!(e.code(), "ERR_DECRYPT");
        assert!(e.to_string().contains("older write"), "{e}");
    }

    #[test]
    fn values_sealed_before_versions_were_bound_still_open() {
        // format 0x01: the aad ends with the record id
        let k = ring(&K1, &[]);
        let nonce = [5u8; NONCE];
        let mut v1 = vec![SEALED, FORMAT_UNVERSIONED];
        v1.extend_from_slice(&k.key_id());
        v1.extend_from_slice(&nonce);
        let aad = associated_data(&v1[..HEADER], "s1", PRE_KEY, None);
        let mut body = b"legacy".to_vec();
        let tag = k
            .current
            .cipher
            .encrypt_inout_detached(
                &Nonce::<<Aes256Gcm as AeadCore>::NonceSize>::from(nonce),
                &aad,
                body.as_mut_slice().into(),
            )
            .unwrap();
        v1.extend_from_slice(&body);
        v1.extend_from_slice(&tag);
        for version in [0, 7, u64::MAX] {
            assert_eq!(k.open("s1", PRE_KEY, version, &v1).unwrap(), b"legacy");
        }
        assert_eq!(k.seal("s1", PRE_KEY, 1, b"x").unwrap()[1], FORMAT);
    }
}

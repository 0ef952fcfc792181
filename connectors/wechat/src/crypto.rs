//! The callback cryptography of a WeChat official account: SHA-1 signatures over sorted
//! parts, and the AES-256-CBC frame `random16 | msg_len u32 BE | msg | appid` padded with
//! PKCS#7 to 32-byte blocks.

use std::fmt;

use aes::Aes256;
use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// WeChat pads to 32 bytes, not to the AES block size (16).
const PAD_BLOCK: usize = 32;
/// Length of the random prefix of every frame.
const RANDOM_LEN: usize = 16;
/// Random prefix plus the length field.
const HEADER_LEN: usize = RANDOM_LEN + 4;
/// Longest message length taken as genuine when telling truncation from a wrong key (a
/// wrong key gives a uniformly random u32, below this once in 65536).
const PLAUSIBLE_MESSAGE_LEN: usize = 64 * 1024;

/// Real EncodingAESKeys carry non-zero bits past the 256 used, which strict decoders
/// (including base64's STANDARD engine) refuse.
const LENIENT_KEY_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// SHA-1 of the parts sorted by byte value and joined without separator, as lowercase hex.
/// The parts are sorted as a list: equal parts (timestamp equal to nonce) both count.
pub fn signature(parts: &[&str]) -> String {
    let mut sorted = parts.to_vec();
    sorted.sort_unstable();
    let mut hasher = Sha1::new();
    for part in sorted {
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Whether `given` is the signature of `parts`, compared in constant time.
pub fn verify_signature(parts: &[&str], given: &str) -> bool {
    let expected = signature(parts);
    let given = given.trim().to_ascii_lowercase();
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

/// Why an EncodingAESKey is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not 43 characters.
    #[error("encoding aes key must be 43 characters, got {0}")]
    Length(usize),
    /// A character outside `[A-Za-z0-9]`.
    #[error("encoding aes key may only contain letters and digits")]
    Alphabet,
}

/// An AES-256 key derived from an EncodingAESKey; the IV is its first 16 bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct AesKey([u8; 32]);

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesKey(****)")
    }
}

/// One decrypted frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The sender's random prefix (opaque bytes, ignored by the protocol).
    pub random: [u8; RANDOM_LEN],
    /// The message, UTF-8 XML.
    pub message: String,
    /// The app id the frame was made for (the account's, or a component app id).
    pub receive_id: String,
}

/// Why a ciphertext does not decrypt to a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// `Encrypt` is not standard base64.
    #[error("ciphertext is not valid base64")]
    Base64,
    /// The ciphertext cannot be a padded frame (empty, or not whole 32-byte blocks).
    #[error("ciphertext length {0} is not a positive multiple of 32")]
    Length(usize),
    /// The PKCS#7 padding is not `n` bytes of value `n` with `n` in 1..=32.
    #[error("invalid padding")]
    Padding,
    /// The frame is shorter than its header, or than its length field says (`claimed`).
    #[error("frame is shorter than its length field says ({claimed} bytes)")]
    Truncated {
        /// The message length the frame claims.
        claimed: usize,
    },
    /// The message or the app id is not UTF-8.
    #[error("frame content is not utf-8")]
    NotUtf8,
}

impl FrameError {
    /// Errors that come from the ciphertext itself and would be the same under any key.
    pub fn is_shape_error(&self) -> bool {
        matches!(self, FrameError::Base64 | FrameError::Length(_))
    }
}

impl AesKey {
    /// Derives the key from a 43-character EncodingAESKey.
    pub fn from_encoding_aes_key(encoding_aes_key: &str) -> Result<Self, KeyError> {
        let len = encoding_aes_key.chars().count();
        if len != 43 {
            return Err(KeyError::Length(len));
        }
        if !encoding_aes_key.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(KeyError::Alphabet);
        }
        let decoded = LENIENT_KEY_ENGINE
            .decode(format!("{encoding_aes_key}="))
            .map_err(|_| KeyError::Alphabet)?;
        let key: [u8; 32] = decoded
            .try_into()
            .map_err(|v: Vec<u8>| KeyError::Length(v.len()))?;
        Ok(Self(key))
    }

    /// The raw key bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn iv(&self) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&self.0[..16]);
        iv
    }

    /// Encrypts `message` for `receive_id` with the given random prefix; returns base64.
    pub fn encrypt(&self, random: &[u8; RANDOM_LEN], message: &str, receive_id: &str) -> String {
        let mut frame =
            Vec::with_capacity(HEADER_LEN + message.len() + receive_id.len() + PAD_BLOCK);
        frame.extend_from_slice(random);
        // The length is in bytes of UTF-8, never in characters. A message over 4 GiB cannot
        // reach here: bodies are capped far below that.
        let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(message.as_bytes());
        frame.extend_from_slice(receive_id.as_bytes());
        // Padding is mandatory: an aligned frame gets a whole block of 32 bytes of 0x20.
        let pad = PAD_BLOCK - frame.len() % PAD_BLOCK;
        frame.resize(frame.len() + pad, pad as u8);
        let cipher = cbc::Encryptor::<Aes256>::new(&self.0.into(), &self.iv().into());
        STANDARD.encode(cipher.encrypt_padded_vec_mut::<NoPadding>(&frame))
    }

    /// Decrypts a base64 `Encrypt` value into its frame, checking every length.
    pub fn decrypt(&self, encrypt: &str) -> Result<Frame, FrameError> {
        let ciphertext = decode_ciphertext(encrypt)?;
        let cipher = cbc::Decryptor::<Aes256>::new(&self.0.into(), &self.iv().into());
        let plain = cipher
            .decrypt_padded_vec_mut::<NoPadding>(&ciphertext)
            .map_err(|_| FrameError::Length(ciphertext.len()))?;
        parse_frame(&plain)
    }
}

/// Base64-decodes `Encrypt` and checks it can be a padded frame.
fn decode_ciphertext(encrypt: &str) -> Result<Vec<u8>, FrameError> {
    let ciphertext = STANDARD
        .decode(encrypt.trim())
        .map_err(|_| FrameError::Base64)?;
    if ciphertext.is_empty() || ciphertext.len() % PAD_BLOCK != 0 {
        return Err(FrameError::Length(ciphertext.len()));
    }
    Ok(ciphertext)
}

/// Splits a decrypted frame into its parts, checking the length field and the padding.
/// Public so the fuzz targets (fuzz/) reach it without going through AES.
pub fn parse_frame(plain: &[u8]) -> Result<Frame, FrameError> {
    if plain.len() < HEADER_LEN + 1 {
        return Err(FrameError::Truncated { claimed: 0 });
    }
    let mut random = [0u8; RANDOM_LEN];
    random.copy_from_slice(&plain[..RANDOM_LEN]);
    let mut len_bytes = [0u8; 4];
    len_bytes.copy_from_slice(&plain[RANDOM_LEN..HEADER_LEN]);
    let msg_len = u32::from_be_bytes(len_bytes) as usize;
    // The length is checked before the padding: CBC decrypts the first block right even when
    // the tail is cut off, so a plausible length with missing data means truncation, while a
    // wrong key yields an absurd length.
    if HEADER_LEN.saturating_add(msg_len) >= plain.len() {
        return Err(FrameError::Truncated { claimed: msg_len });
    }
    let pad = plain[plain.len() - 1] as usize;
    // A pad longer than what follows the header would cut into it (or past the start).
    if !(1..=PAD_BLOCK).contains(&pad) || pad > plain.len() - HEADER_LEN {
        return Err(FrameError::Padding);
    }
    let (body, padding) = plain.split_at(plain.len() - pad);
    if padding.iter().any(|b| *b as usize != pad) {
        return Err(FrameError::Padding);
    }
    let rest = body.get(HEADER_LEN..).unwrap_or_default();
    if msg_len > rest.len() {
        return Err(FrameError::Truncated { claimed: msg_len });
    }
    let (message, receive_id) = rest.split_at(msg_len);
    let message = std::str::from_utf8(message).map_err(|_| FrameError::NotUtf8)?;
    let receive_id = std::str::from_utf8(receive_id).map_err(|_| FrameError::NotUtf8)?;
    Ok(Frame {
        random,
        message: message.to_owned(),
        receive_id: receive_id.to_owned(),
    })
}

/// Why an encrypted push could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    /// `msg_signature` does not match token, timestamp, nonce and `Encrypt`.
    #[error("msg_signature does not match")]
    BadSignature,
    /// `Encrypt` cannot be a ciphertext at all (not base64, misaligned) or was cut short.
    #[error("malformed ciphertext: {0}")]
    MalformedCiphertext(FrameError),
    /// No configured key turns the ciphertext into a valid frame: a wrong or rotated key.
    #[error("no configured encoding aes key decrypts the message: {0}")]
    WrongKey(FrameError),
    /// The frame names another app id.
    #[error("message is for app id {got:?}, not this account")]
    AppIdMismatch {
        /// The app id found in the frame.
        got: String,
    },
}

/// A successfully opened push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The decrypted frame.
    pub frame: Frame,
    /// Which configured key opened it (0 current, 1 previous): replies use the same one.
    pub key_index: usize,
}

/// The keys and names one account uses to open pushes and seal replies.
#[derive(Debug, Clone)]
pub struct MessageCrypt {
    token: String,
    keys: Vec<AesKey>,
    app_id: String,
    strict_app_id: bool,
}

impl MessageCrypt {
    /// A crypt with the current key first and, during a rotation, the previous one.
    pub fn new(token: &str, keys: Vec<AesKey>, app_id: &str, strict_app_id: bool) -> Self {
        Self {
            token: token.to_owned(),
            keys,
            app_id: app_id.to_owned(),
            strict_app_id,
        }
    }

    /// Whether any key is configured (plaintext-only accounts have none).
    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Verifies `msg_signature`, then decrypts with the current key, then the previous one,
    /// and checks the app id. Nothing is decrypted before the signature matches.
    pub fn open(
        &self,
        timestamp: &str,
        nonce: &str,
        encrypt: &str,
        msg_signature: &str,
    ) -> Result<Opened, DecryptError> {
        if !verify_signature(&[&self.token, timestamp, nonce, encrypt], msg_signature) {
            return Err(DecryptError::BadSignature);
        }
        decode_ciphertext(encrypt).map_err(DecryptError::MalformedCiphertext)?;
        let mut errors = Vec::with_capacity(self.keys.len());
        for (key_index, key) in self.keys.iter().enumerate() {
            match key.decrypt(encrypt) {
                Ok(frame) => {
                    if self.strict_app_id && frame.receive_id != self.app_id {
                        return Err(DecryptError::AppIdMismatch {
                            got: frame.receive_id,
                        });
                    }
                    return Ok(Opened { frame, key_index });
                }
                Err(err) if err.is_shape_error() => {
                    return Err(DecryptError::MalformedCiphertext(err));
                }
                Err(err) => errors.push(err),
            }
        }
        // Only once every key failed: a plausible length under some key means the right key
        // met a cut-off ciphertext.
        if let Some(cut) = errors.iter().find(
            |e| matches!(e, FrameError::Truncated { claimed } if *claimed > 0 && *claimed <= PLAUSIBLE_MESSAGE_LEN),
        ) {
            return Err(DecryptError::MalformedCiphertext(cut.clone()));
        }
        Err(DecryptError::WrongKey(
            errors.pop().unwrap_or(FrameError::Padding),
        ))
    }

    /// Seals a reply with key `key_index` and a fresh random prefix, as the four-element
    /// envelope WeChat expects.
    pub fn seal(
        &self,
        key_index: usize,
        message: &str,
        receive_id: &str,
        timestamp: &str,
        nonce: &str,
    ) -> Option<String> {
        let random: [u8; RANDOM_LEN] = rand::random();
        self.seal_with_random(key_index, &random, message, receive_id, timestamp, nonce)
    }

    /// [`MessageCrypt::seal`] with a given random prefix, for reproducible tests.
    pub fn seal_with_random(
        &self,
        key_index: usize,
        random: &[u8; RANDOM_LEN],
        message: &str,
        receive_id: &str,
        timestamp: &str,
        nonce: &str,
    ) -> Option<String> {
        let key = self.keys.get(key_index)?;
        let encrypt = key.encrypt(random, message, receive_id);
        let msg_signature = signature(&[&self.token, timestamp, nonce, &encrypt]);
        Some(format!(
            "<xml>\n<Encrypt>{}</Encrypt>\n<MsgSignature>{}</MsgSignature>\n<TimeStamp>{}</TimeStamp>\n<Nonce>{}</Nonce>\n</xml>",
            crate::passive::cdata(&encrypt),
            crate::passive::cdata(&msg_signature),
            timestamp,
            crate::passive::cdata(nonce),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(msg: &[u8], appid: &[u8], pad: Option<Vec<u8>>) -> Vec<u8> {
        let mut f = b"0123456789abcdef".to_vec();
        f.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        f.extend_from_slice(msg);
        f.extend_from_slice(appid);
        let pad = pad.unwrap_or_else(|| {
            let n = PAD_BLOCK - f.len() % PAD_BLOCK;
            vec![n as u8; n]
        });
        f.extend_from_slice(&pad);
        f
    }

    #[test]
    fn keys_must_be_43_alphanumerics() {
        assert_eq!(
            AesKey::from_encoding_aes_key("abc"),
            Err(KeyError::Length(3))
        );
        assert_eq!(
            AesKey::from_encoding_aes_key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEF+"),
            Err(KeyError::Alphabet)
        );
        assert!(
            AesKey::from_encoding_aes_key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG").is_ok()
        );
        assert_eq!(
            format!(
                "{:?}",
                AesKey::from_encoding_aes_key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG")
                    .unwrap()
            ),
            "AesKey(****)"
        );
    }

    #[test]
    fn frames_are_checked_field_by_field() {
        assert!(parse_frame(&frame(b"<xml/>", b"wx1", None)).is_ok());
        let cases: Vec<(Vec<u8>, FrameError)> = vec![
            (frame(b"<xml/>", b"wx1", Some(vec![0])), FrameError::Padding),
            (
                frame(b"<xml/>", b"wx1", Some(vec![33; 33])),
                FrameError::Padding,
            ),
            (
                frame(b"<xml/>", b"wx1", Some(vec![7, 3, 3])),
                FrameError::Padding,
            ),
            (frame(b"\xff\xfe", b"wx1", None), FrameError::NotUtf8),
            (frame(b"ok", b"\xff", None), FrameError::NotUtf8),
            (b"short".to_vec(), FrameError::Truncated { claimed: 0 }),
        ];
        for (bytes, expected) in cases {
            assert_eq!(parse_frame(&bytes), Err(expected));
        }
        // A length field that runs past the data.
        let mut long = frame(b"<xml/>", b"wx1", None);
        long[16..20].copy_from_slice(&1000u32.to_be_bytes());
        assert_eq!(
            parse_frame(&long),
            Err(FrameError::Truncated { claimed: 1000 })
        );
        // A length field that reaches into the padding.
        let mut into_pad = frame(b"<xml/>", b"", None);
        let claimed = (into_pad.len() - 21) as u32;
        into_pad[16..20].copy_from_slice(&claimed.to_be_bytes());
        assert!(matches!(
            parse_frame(&into_pad),
            Err(FrameError::Truncated { .. })
        ));
    }

    #[test]
    fn a_pad_longer_than_the_frame_is_refused() {
        // Found by fuzz/wechat_decrypt: 22 bytes whose last byte claims 32 bytes of padding.
        let mut plain = vec![0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0x93, 0x05];
        plain.extend([0; 9]);
        plain.extend([0x0b, 0x20]);
        assert_eq!(plain.len(), 22);
        assert_eq!(parse_frame(&plain), Err(FrameError::Padding));
    }

    #[test]
    fn an_aligned_frame_gets_a_whole_padding_block() {
        let key =
            AesKey::from_encoding_aes_key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG").unwrap();
        // 20 + 26 + 18 = 64: aligned, so 32 bytes of padding follow.
        let encrypt = key.encrypt(
            &[b'r'; 16],
            "success-abcdefghijklmnopqr",
            "wx2c2769f8efd9abc2",
        );
        let bytes = STANDARD.decode(&encrypt).unwrap();
        assert_eq!(bytes.len(), 96);
        assert_eq!(
            key.decrypt(&encrypt).unwrap().message,
            "success-abcdefghijklmnopqr"
        );
    }

    #[test]
    fn signature_parts_are_sorted_as_a_list() {
        // Equal timestamp and nonce must both count (a set would drop one).
        assert_eq!(signature(&["b", "a", "a"]), signature(&["a", "a", "b"]));
        assert_ne!(signature(&["a", "a", "b"]), signature(&["a", "b"]));
        let sig = signature(&["t", "1", "2"]);
        assert!(verify_signature(
            &["t", "1", "2"],
            &sig.to_ascii_uppercase()
        ));
        assert!(!verify_signature(&["t", "1", "2"], &sig[..39]));
        assert!(!verify_signature(&["t", "1", "2"], ""));
    }
}

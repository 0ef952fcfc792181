//! Signed, expiring daemon URLs for inbound media: `/wechat/{id}/media/{media_id}?exp=&sig=`.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use switchboard_sdk::Secret;

type HmacSha256 = Hmac<Sha256>;

/// Why a media URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaUrlError {
    /// Signature missing, malformed or wrong, or the media id is not one we sign.
    #[error("bad media url signature")]
    BadSignature,
    /// Past its expiry.
    #[error("media url expired")]
    Expired,
}

/// Makes and checks media URLs for one connector.
#[derive(Debug, Clone)]
pub struct MediaSigner {
    key: Secret,
    ttl_secs: u64,
    /// `{public_base_url}/wechat/{id}`.
    prefix: String,
    connector_id: String,
}

/// WeChat media ids are URL-safe; anything else is neither signed nor served.
pub fn is_media_id(media_id: &str) -> bool {
    (1..=256).contains(&media_id.len())
        && media_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl MediaSigner {
    /// A signer for connector `connector_id`, URLs starting at `public_base_url` (may be
    /// empty for daemon-relative URLs).
    pub fn new(key: Secret, ttl_secs: u64, public_base_url: &str, connector_id: &str) -> Self {
        Self {
            key,
            ttl_secs,
            prefix: format!("{public_base_url}/wechat/{connector_id}"),
            connector_id: connector_id.to_owned(),
        }
    }

    fn mac(&self, media_id: &str, exp: i64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(self.key.expose().as_bytes())
            .unwrap_or_else(|_| unreachable!("hmac takes keys of any length"));
        // The connector id is signed too, so a URL cannot be replayed against another account.
        mac.update(format!("{}\n{media_id}\n{exp}", self.connector_id).as_bytes());
        mac
    }

    /// The URL for `media_id`, valid until `now + ttl`.
    pub fn url(&self, media_id: &str, now_unix: i64) -> Option<String> {
        if !is_media_id(media_id) {
            return None;
        }
        let exp = now_unix.saturating_add(self.ttl_secs as i64);
        let sig = hex::encode(self.mac(media_id, exp).finalize().into_bytes());
        Some(format!(
            "{}/media/{media_id}?exp={exp}&sig={sig}",
            self.prefix
        ))
    }

    /// Checks a URL's `exp` and `sig` for `media_id`, the signature in constant time.
    pub fn verify(
        &self,
        media_id: &str,
        exp: &str,
        sig: &str,
        now_unix: i64,
    ) -> Result<(), MediaUrlError> {
        if !is_media_id(media_id) {
            return Err(MediaUrlError::BadSignature);
        }
        let exp: i64 = exp.parse().map_err(|_| MediaUrlError::BadSignature)?;
        let sig = hex::decode(sig).map_err(|_| MediaUrlError::BadSignature)?;
        self.mac(media_id, exp)
            .verify_slice(&sig)
            .map_err(|_| MediaUrlError::BadSignature)?;
        if now_unix > exp {
            return Err(MediaUrlError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(url: &str) -> (String, String) {
        let q = url.split_once('?').unwrap().1;
        let mut exp = String::new();
        let mut sig = String::new();
        for pair in q.split('&') {
            let (k, v) = pair.split_once('=').unwrap();
            match k {
                "exp" => exp = v.to_owned(),
                "sig" => sig = v.to_owned(),
                _ => {}
            }
        }
        (exp, sig)
    }

    #[test]
    fn signed_urls_verify_until_they_expire() {
        let signer = MediaSigner::new(
            Secret::new("k".repeat(32)),
            60,
            "https://cs.example",
            "main",
        );
        let url = signer.url("MEDIA_1-x", 1000).unwrap();
        assert!(url.starts_with("https://cs.example/wechat/main/media/MEDIA_1-x?exp=1060&sig="));
        let (exp, sig) = query(&url);
        assert_eq!(signer.verify("MEDIA_1-x", &exp, &sig, 1060), Ok(()));
        assert_eq!(
            signer.verify("MEDIA_1-x", &exp, &sig, 1061),
            Err(MediaUrlError::Expired)
        );
        assert_eq!(
            signer.verify("MEDIA_2", &exp, &sig, 1000),
            Err(MediaUrlError::BadSignature)
        );
        assert_eq!(
            signer.verify("MEDIA_1-x", "2000", &sig, 1000),
            Err(MediaUrlError::BadSignature)
        );
        assert_eq!(
            signer.verify("MEDIA_1-x", &exp, "zz", 1000),
            Err(MediaUrlError::BadSignature)
        );
        let other = MediaSigner::new(Secret::new("k".repeat(32)), 60, "", "other");
        assert_eq!(
            other.verify("MEDIA_1-x", &exp, &sig, 1000),
            Err(MediaUrlError::BadSignature)
        );
        assert!(signer.url("../etc", 0).is_none());
    }
}
